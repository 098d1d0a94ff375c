from httpscale.cli import main

main()

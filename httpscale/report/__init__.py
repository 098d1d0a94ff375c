"""Reports from what httpscale already sees: `httpscale report cost` (cost.py is the pure
core), and the SVG charts and HTML pages the load-test report (loadtests/report.py) shares."""

"""`python -m httpscale.doctor`: the same as `httpscale doctor`."""

from httpscale.doctor.cli import doctor_command

doctor_command(prog_name="httpscale doctor")

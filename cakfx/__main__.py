from cakfx.cli import cli

cli(prog_name="cakfx")

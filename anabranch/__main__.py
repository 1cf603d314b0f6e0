from anabranch.cli import app

app(prog_name="anabranch")

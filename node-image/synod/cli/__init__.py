"""The `synod` command line (click + rich); entry point `synod.cli.main:main`."""

"""The web UI of ``vmsnap serve`` (ADR 0023): ``vmsnap.web.app.WebUi``."""

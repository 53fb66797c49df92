"""swiftnb.widgets: the notebook UI (ipywidgets) over swiftnb's engines and endpoints.

Installed as `swiftnb.widgets`; the core package never imports it, so
`import swiftnb` works without ipywidgets. The chat and compare widgets land here.
"""

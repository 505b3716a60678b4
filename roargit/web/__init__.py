"""The web view of lineage: `roar ui` on loopback, and self-contained HTML exports.

`app` is the WSGI application, `render` the pages, `layout` the DAG drawn as SVG on the
server, `export` the one-file pages of `roar dag --html` and `roar diff --html`; the style
sheet and the script ship in `static/` (no CDN: everything works offline).
"""

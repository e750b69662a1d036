"""The live view: a local web page of what a running graph sees (`facesleuth run GRAPH --view`).

- edge.live.state: what the page shows, kept by the `view` node (nodes/view.py) from the messages it
  subscribes to: the newest frames, crops and flows (rendered to JPEG only while a browser watches, with
  edge.debug_view's drawing), a ring of per-ROI motion, the events as they came.
- edge.live.server: the HTTP server (standard library, threaded): the page, an MJPEG stream, Server-Sent
  Events with the plot data and the events; loopback only unless bound elsewhere with TLS and a token.
- edge.live.wiring: `--view`: the `view` node added to a graph and subscribed to its streams.
- edge/live/static: the page (plain HTML, JS and CSS; nothing is fetched from elsewhere).

docs/live-view.md describes the page and its endpoints.
"""

DEFAULT_PORT = 8570  # the page's port unless `--view PORT` or the view node's `port` param says otherwise

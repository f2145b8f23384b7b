"""``ovs3d view``: a live web viewer (viser) of any run, rendered from the browser's camera."""

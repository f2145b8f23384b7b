"""``ovs3d export``: a stage-2 run's segmented scene as files other tools open, in the coordinate frame of
the input poses: a labelled point cloud (``points.py``), one mesh per class (``mesh.py``), the points and
mesh of a free-text query, and the cameras (``frames.py``); writers in ``files.py``, the verb in ``run.py``."""

"""What every verb shares: the runtime flags (``--device``, ``--threads``) and the preset names.

The same name means the same thing in every verb: ``--data`` a scene folder, ``--run`` a run folder
that is read, ``--out`` the folder written, ``--preset`` the preset of every training stage, and a
stage's settings under the stage's name (``--extract.*``, ``--reconstruct.*``, ``--segment.*``,
``--test.*``). A preset sets the defaults; any flag given overrides them.
"""

from __future__ import annotations

from typing import Annotated

import tyro

from ovs3d.device import Runtime

RuntimeFlags = Annotated[Runtime, tyro.conf.OmitArgPrefixes]

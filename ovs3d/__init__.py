"""ovs3d: weakly supervised 3D open-vocabulary segmentation (3D-OVS) on a TensoRF radiance field."""

__version__ = "0.1.0"

"""The offline world: a software renderer of traffic-camera images (pure library, beside the product).

The street world: `build_fleet` (everyday vehicle identities), `render_fleet` (single vehicles),
`render_corridor` and `render_highway` / `write_mot` / `write_coco` / `write_videos` (a camera network along a street). The TORCS set:

Public API: `find_torcs_cars`, `render_torcs`, `contact_sheet` (see `api.py`); building blocks:
`parse_ac3d` (AC3D/.acc parser), `rasterize` (numpy z-buffer rasterizer), `load_car`.
"""

from carsearch_world.ac3d import AC3DError, Mesh, parse_ac3d
from carsearch_world.api import contact_sheet, default_torcs_dir, load_cars, render_torcs
from carsearch_world.corridor import render_corridor, write_coco, write_mot
from carsearch_world.highway import CAMERA as HIGHWAY_CAMERA
from carsearch_world.highway import render_highway
from carsearch_world.raster import Camera, Fragments, rasterize, sample_bilinear
from carsearch_world.scene import COLORS, VIEWS, view_from_azimuth
from carsearch_world.street import build_fleet, render_fleet
from carsearch_world.torcs import MODEL_TABLE, CarLoadError, CarModel, find_torcs_cars, load_car
from carsearch_world.traffic import TrafficFrame, render_traffic, render_traffic_frame
from carsearch_world.video import write_videos

__all__ = [
    "AC3DError",
    "build_fleet",
    "render_corridor",
    "render_fleet",
    "render_highway",
    "HIGHWAY_CAMERA",
    "write_coco",
    "write_mot",
    "write_videos",
    "Camera",
    "CarLoadError",
    "CarModel",
    "COLORS",
    "Fragments",
    "MODEL_TABLE",
    "Mesh",
    "TrafficFrame",
    "VIEWS",
    "contact_sheet",
    "default_torcs_dir",
    "find_torcs_cars",
    "load_car",
    "load_cars",
    "parse_ac3d",
    "rasterize",
    "render_torcs",
    "render_traffic",
    "render_traffic_frame",
    "sample_bilinear",
    "view_from_azimuth",
]

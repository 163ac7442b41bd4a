"""nuScenes detection constants shared by the data pipeline, the heads and the output formatter."""

# BEV-head class order (= official config `class_names`), spec §2.7.
CLASSES = ("barrier", "bicycle", "bus", "car", "construction_vehicle", "motorcycle", "pedestrian",
           "traffic_cone", "trailer", "truck")

CAMERAS = ("CAM_FRONT", "CAM_FRONT_RIGHT", "CAM_FRONT_LEFT", "CAM_BACK", "CAM_BACK_LEFT", "CAM_BACK_RIGHT")

# Canonical (w, l, h) per class of the DD3D head, spec §2.7 [code].
CANONICAL_WLH = {
    "barrier": (2.352, 0.506, 1.041), "bicycle": (0.614, 1.702, 1.305), "bus": (2.914, 10.725, 3.283),
    "car": (1.975, 4.641, 1.744), "construction_vehicle": (2.772, 6.565, 3.247),
    "motorcycle": (0.780, 2.139, 1.444), "pedestrian": (0.667, 0.718, 1.762),
    "traffic_cone": (0.402, 0.403, 1.008), "trailer": (3.006, 12.820, 4.121), "truck": (2.499, 6.931, 2.838),
}

# DD3D attribute ids, spec §3.2 (3 = ignore).
ATTRIBUTE_ID = {"vehicle.moving": 0, "vehicle.parked": 1, "vehicle.stopped": 2, "pedestrian.moving": 0,
                "pedestrian.standing": 1, "pedestrian.sitting_lying_down": 2, "cycle.with_rider": 0,
                "cycle.without_rider": 1}

ATTRIBUTES = ("vehicle.moving", "vehicle.parked", "vehicle.stopped", "pedestrian.moving", "pedestrian.standing",
              "pedestrian.sitting_lying_down", "cycle.with_rider", "cycle.without_rider")

# Official detection range filter (ObjectRangeFilter) and NMS-free decoder post-range, spec §2.6.
PC_RANGE = (-51.2, -51.2, -5.0, 51.2, 51.2, 3.0)
POST_CENTER_RANGE = (-61.2, -61.2, -10.0, 61.2, 61.2, 10.0)

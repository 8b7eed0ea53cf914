"""Write the shipped workflows: API format (``workflows/api/*_api.json``, for the headless runner
``python -m nodes.runner`` and ``/prompt``) and UI format (``example_workflows/*.json``, ComfyUI's template
browser).

ComfyUI lists every ``*.json`` directly inside a pack's ``example_workflows/``, ``example/``, ``examples/``,
``workflow/`` *and* ``workflows/`` folders as templates, so only the UI files may sit at that level: the API
files live one folder deeper (``workflows/api/``), where the template scan does not look.

Run from the repo root after changing a node's inputs: ``PYTHONPATH=. python workflows/build_workflows.py``.
The UI files are derived from the API graphs and the nodes' ``INPUT_TYPES`` (positional widget values,
``control_after_generate`` entries after seeds), so both formats always describe the same graph;
``tests/test_workflows.py`` checks that.
"""
from __future__ import annotations

import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / "workflows"
API_DIR = WORKFLOWS / "api"
EXAMPLES = ROOT / "example_workflows"
#: Canvas position of the first node column: right of the frontend's sidebar (about 400 px at the 0.8 zoom).
ORIGIN = (480, 80)
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")

MODEL = {"class_type": "MagicBoostLoadMVModel", "_meta": {"title": "Load MV Model"},
         "inputs": {"model_name": "demo (bundled)", "dtype": "auto", "device": "auto"}}


def _mesh(path):
    return {"class_type": "MagicBoostLoadMesh", "_meta": {"title": "Load coarse mesh"},
            "inputs": {"mesh_file": "(none)", "path": path, "axes": "auto"}}


def _images(path):
    return {"class_type": "MagicBoostLoadImages", "_meta": {"title": "Load views"},
            "inputs": {"image_file": "(none)", "path": path}}


def _encode(layout, preset):
    return {"class_type": "MagicBoostEncodeViews", "_meta": {"title": "Encode Views"},
            "inputs": {"mv_model": ["1", 0], "images": ["2", 0], "layout": layout, "preset": preset, "seed": 0,
                       "sample_posterior": True, "strength_tex": 0.0, "strength_geo": 0.0, "mask": ["2", 1]}}


def _refine(steps):
    return {"class_type": "MagicBoostSDSRefineMesh", "_meta": {"title": "SDS Refine Mesh"},
            "inputs": {"mv_model": ["1", 0], "views": ["4", 0], "mesh": ["3", 0], "steps": steps,
                       "lr_geometry": -1.0, "lr_texture": -1.0, "resolution": 64, "seed": 0,
                       "aiu_config": ["5", 0], "condition_view_weight": -1.0, "align": False, "config": ""}}


AIU = {"class_type": "MagicBoostAIULoss", "_meta": {"title": "AIU Loss"},
       "inputs": {"enabled": True, "start_fraction": 0.2, "every_fraction": 0.4, "strength": 0.1, "mode": "sdedit"}}

GRAPHS = {
    # Instant3D: 4 RGBA views (batch) + a coarse mesh -> refined GLB + preview renders.
    "refine_instant3d": {
        "1": MODEL,
        "2": _images("workflows/inputs/instant3d"),
        "3": _mesh("workflows/inputs/coarse_sphere.glb"),
        "4": _encode("views (batch)", "instant3d"),
        "5": AIU,
        "6": _refine(8),
        "7": {"class_type": "MagicBoostSaveMesh", "_meta": {"title": "Save refined mesh"},
              "inputs": {"mesh": ["6", 0], "filename_prefix": "magicboost/instant3d_refined"}},
        "8": {"class_type": "SaveImage", "_meta": {"title": "Save preview"},
              "inputs": {"images": ["6", 1], "filename_prefix": "magicboost/instant3d_preview"}},
    },
    # InstantMesh / Zero123++: one 3x2 grid image + the InstantMesh mesh -> refined GLB + renders of it.
    "refine_instantmesh": {
        "1": MODEL,
        "2": _images("workflows/inputs/instantmesh_grid.png"),
        "3": _mesh("workflows/inputs/coarse_sphere.glb"),
        "4": _encode("zero123++ 3x2", "auto"),
        "5": AIU,
        "6": _refine(8),
        "7": {"class_type": "MagicBoostSaveMesh", "_meta": {"title": "Save refined mesh"},
              "inputs": {"mesh": ["6", 0], "filename_prefix": "magicboost/instantmesh_refined"}},
        "9": {"class_type": "MagicBoostCameraPoses", "_meta": {"title": "Check cameras"},
              "inputs": {"preset": "instantmesh", "elevations": "10", "azimuths": "45", "distance": 1.5,
                         "fov": 49.134}},
        "10": {"class_type": "MagicBoostRenderViews", "_meta": {"title": "Render refined mesh"},
               "inputs": {"mesh": ["6", 0], "cameras": ["9", 0], "resolution": 128, "mode": "albedo",
                          "background": 1.0, "framing": "as is"}},
        "11": {"class_type": "SaveImage", "_meta": {"title": "Save renders"},
               "inputs": {"images": ["10", 0], "filename_prefix": "magicboost/instantmesh_renders"}},
    },
    # Novel views only: 4 views -> 4 new views at elevation 10.
    "novel_views": {
        "1": MODEL,
        "2": _images("workflows/inputs/instant3d"),
        "4": {**_encode("views (batch)", "instant3d"),
              "inputs": {**_encode("views (batch)", "instant3d")["inputs"], "strength_tex": 1.0, "strength_geo": 1.0}},
        "5": {"class_type": "MagicBoostCameraPoses", "_meta": {"title": "Target cameras"},
              "inputs": {"preset": "custom", "elevations": "10", "azimuths": "45, 135, 225, 315", "distance": 1.5,
                         "fov": 49.134}},
        "6": {"class_type": "MagicBoostNovelViewSample", "_meta": {"title": "Novel View Sample"},
              "inputs": {"mv_model": ["1", 0], "views": ["4", 0], "cameras": ["5", 0], "steps": 10, "cfg": 5.0,
                         "seed": 0, "init": "noise", "init_strength": 0.6}},
        "7": {"class_type": "SaveImage", "_meta": {"title": "Save novel views"},
              "inputs": {"images": ["6", 0], "filename_prefix": "magicboost/novel_views"}},
    },
}


def _is_link(v) -> bool:
    return isinstance(v, list) and len(v) == 2 and isinstance(v[1], int)


def _is_widget(spec) -> bool:
    return isinstance(spec[0], list) or spec[0] in WIDGET_TYPES


def _input_specs(cls) -> list[tuple[str, tuple]]:
    t = cls.INPUT_TYPES()
    return list(t.get("required", {}).items()) + list(t.get("optional", {}).items())


def _depths(graph) -> dict:
    depth = {}

    def d(nid):
        if nid not in depth:
            ups = [str(v[0]) for v in graph[nid]["inputs"].values() if _is_link(v)]
            depth[nid] = 1 + max((d(u) for u in ups), default=-1)
        return depth[nid]

    for nid in graph:
        d(nid)
    return depth


def to_ui(graph: dict, registry: dict) -> dict:
    """UI-format workflow (frontend schema 0.4) equivalent to an API graph."""
    nodes, links = [], []
    depth = _depths(graph)
    rows: dict[int, int] = {}
    socket_slots = {}
    for nid, node in graph.items():
        cls = registry[node["class_type"]]
        socket_slots[nid] = [name for name, spec in _input_specs(cls) if not _is_widget(spec)]
    out_links: dict[tuple[str, int], list[int]] = {}
    for nid, node in sorted(graph.items(), key=lambda kv: int(kv[0])):
        for name, v in node["inputs"].items():
            if _is_link(v):
                src, slot = str(v[0]), v[1]
                lid = len(links) + 1
                typ = registry[graph[src]["class_type"]].RETURN_TYPES[slot]
                links.append([lid, int(src), slot, int(nid), socket_slots[nid].index(name), typ])
                out_links.setdefault((src, slot), []).append(lid)
    link_of = {(l[3], l[4]): l[0] for l in links}
    for order, (nid, node) in enumerate(sorted(graph.items(), key=lambda kv: (depth[kv[0]], int(kv[0])))):
        cls = registry[node["class_type"]]
        col = depth[nid]
        row = rows.get(col, 0)
        rows[col] = row + 1
        inputs, widgets = [], []
        for name, spec in _input_specs(cls):
            if _is_widget(spec):
                value = node["inputs"].get(name, (spec[1] or {}).get("default") if len(spec) > 1 else None)
                widgets.append(value)
                if len(spec) > 1 and spec[1].get("control_after_generate"):
                    widgets.append("fixed")
            else:
                slot = socket_slots[nid].index(name)
                inputs.append({"name": name, "type": spec[0], "link": link_of.get((int(nid), slot))})
        names = getattr(cls, "RETURN_NAMES", None) or cls.RETURN_TYPES
        outputs = [{"name": names[i], "type": t, "links": out_links.get((nid, i), []), "slot_index": i}
                   for i, t in enumerate(cls.RETURN_TYPES)]
        nodes.append({
            "id": int(nid), "type": node["class_type"], "pos": [ORIGIN[0] + 380 * col, ORIGIN[1] + 260 * row],
            "size": [340, 200],
            "flags": {}, "order": order, "mode": 0, "inputs": inputs, "outputs": outputs,
            "title": node.get("_meta", {}).get("title", node["class_type"]),
            "properties": {"Node name for S&R": node["class_type"], "cnr_id": "magicboost"},
            "widgets_values": widgets,
        })
    return {"id": "00000000-0000-4000-8000-0000000000%02d" % (len(graph)), "revision": 0,
            "last_node_id": max(int(n) for n in graph), "last_link_id": len(links), "nodes": nodes, "links": links,
            "groups": [], "config": {}, "extra": {"ds": {"scale": 0.8, "offset": [0, 0]}}, "version": 0.4}


def ui_to_api(ui: dict, registry: dict) -> dict:
    """Inverse of :func:`to_ui` for the shipped workflows (no muted/bypassed nodes, no subgraphs)."""
    links = {l[0]: l for l in ui["links"]}
    api = {}
    for node in ui["nodes"]:
        cls = registry[node["type"]]
        inputs, values = {}, list(node["widgets_values"])
        for name, spec in _input_specs(cls):
            if _is_widget(spec):
                if not values:  # an optional widget added after the file was saved: its default
                    inputs[name] = (spec[1] or {}).get("default") if len(spec) > 1 else None
                    continue
                inputs[name] = values.pop(0)
                if len(spec) > 1 and spec[1].get("control_after_generate") and values:
                    values.pop(0)
        for slot in node["inputs"]:
            if slot["link"] is not None:
                link = links[slot["link"]]
                inputs[slot["name"]] = [str(link[1]), link[2]]
        api[str(node["id"])] = {"class_type": node["type"], "inputs": inputs, "_meta": {"title": node["title"]}}
    return api


def main() -> None:
    sys.path.insert(0, str(ROOT))
    from nodes.runner import default_registry

    registry = default_registry()
    EXAMPLES.mkdir(exist_ok=True)
    API_DIR.mkdir(exist_ok=True)
    for name, graph in GRAPHS.items():
        (API_DIR / f"{name}_api.json").write_text(json.dumps(graph, indent=2) + "\n")
        (EXAMPLES / f"{name}.json").write_text(json.dumps(to_ui(graph, registry), indent=2) + "\n")
        print(f"wrote workflows/api/{name}_api.json, example_workflows/{name}.json")


if __name__ == "__main__":
    main()

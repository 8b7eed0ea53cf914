"""Headless workflow runner: execute an API-format ComfyUI workflow of Magic-Boost nodes without ComfyUI.

``python -m nodes.runner WORKFLOW_API.json [--output-dir DIR] [--input-dir DIR] [--set NODE.INPUT=VALUE ...]``
(from the repository root; ``--threads`` and ``-v`` as for ``magicboost``).

What it does, like ComfyUI's executor (restricted to what the pack needs):

* API ("prompt") format: ``{node_id: {"class_type", "inputs": {name: literal | [src_id, output_index]}}}``;
  a literal list is written ``{"__value__": [...]}``.
* Validation before anything runs, against each class's ``INPUT_TYPES``: unknown class types, required
  inputs present, links to existing nodes/outputs with compatible socket types, INT/FLOAT coercion and
  ranges, combo membership. Every error names the node id, its class and the input.
* Only output nodes (``OUTPUT_NODE = True``) and the nodes they depend on run, in topological order.
* Node classes: the pack's ``NODE_CLASS_MAPPINGS`` plus headless stand-ins for the core nodes
  ``LoadImage``, ``SaveImage``, ``PreviewImage`` and ``SaveGLB`` (``nodes/runner_builtins.py``), or any
  registry passed in.

Refinement settings: the SDS Refine Mesh node resolves them from the loaded model's refinement profile
(:func:`magicboost_core.refine.profiles.resolve_config`, the same resolution as ``magicboost refine``);
widgets left at "auto" keep the profile's values, and ``--set NODE.config='{"lambda_sds": 0.5}'`` sets any
RefineConfig field.

This module never imports ComfyUI; it runs the node classes of this package. It belongs to the node pack:
the engine (``magicboost_core``) does not know about it.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import signal
import sys
import time
from dataclasses import dataclass, field

from magicboost_core.cli import add_common_options, run_command
from magicboost_core.validate import load_json_file, prepare_output_dir, readable_error

from . import NODE_CLASS_MAPPINGS, comfy_compat
from .runner_builtins import RUNNER_BUILTINS

__all__ = ["WorkflowError", "RunResult", "default_registry", "load_workflow", "check_structure",
           "apply_overrides", "validate_workflow", "execution_order", "run_workflow", "build_parser", "main"]


@readable_error
class WorkflowError(ValueError):
    """The workflow cannot run; the message names the node id, class and input concerned."""


@dataclass
class RunResult:
    """``outputs``: node id -> the node's result tuple; ``ui``: node id -> ui dict; ``files``: absolute
    paths of the files written into the output folder; ``seconds``: node id -> run time."""

    outputs: dict = field(default_factory=dict)
    ui: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    seconds: dict = field(default_factory=dict)


# ------------------------------------------------------------------------------------------ registry
def default_registry() -> dict:
    """class_type -> class: the pack's nodes plus the headless stand-ins for a few core nodes."""
    return {**RUNNER_BUILTINS, **NODE_CLASS_MAPPINGS}


# ------------------------------------------------------------------------------------------ workflow file
def load_workflow(path: str | os.PathLike) -> dict:
    """Read an API-format workflow; a UI-format file gets an error that says how to export the API format."""
    path = pathlib.Path(path)
    try:
        data = load_json_file(path, "workflow file", "workflow")
    except ValueError as e:
        raise WorkflowError(str(e)) from None
    if isinstance(data, dict) and "prompt" in data and isinstance(data["prompt"], dict) and "nodes" not in data:
        data = data["prompt"]  # a saved /prompt request body
    if isinstance(data, dict) and "nodes" in data and "links" in data:
        raise WorkflowError(f"{path} is a UI-format workflow; the runner needs the API format. In ComfyUI use "
                            "Workflow > Export (API), or use the *_api.json file shipped next to it.")
    if not isinstance(data, dict) or not data or not all(isinstance(v, dict) and "class_type" in v
                                                          for v in data.values()):
        raise WorkflowError(f"{path} is not an API-format workflow (expected {{node_id: {{class_type, inputs}}}}); "
                            "in ComfyUI use Workflow > Export (API).")
    check_structure(data, str(path))
    return data


def check_structure(prompt: dict, source: str = "the workflow") -> None:
    """Shape checks before anything else: every node is an object with a text ``class_type`` and an
    ``inputs`` object. Raises :class:`WorkflowError` listing each malformed node and the fix."""
    errors = []
    for node_id, node in prompt.items():
        if not isinstance(node, dict):
            errors.append(f"node {node_id}: expected an object {{class_type, inputs}}, got {type(node).__name__}.")
            continue
        ct = node.get("class_type")
        if not isinstance(ct, str) or not ct:
            errors.append(f"node {node_id}: 'class_type' must be the node's type name as text (e.g. "
                          f"\"MagicBoostLoadMesh\"), got {json.dumps(ct)[:60]}.")
        inputs = node.get("inputs", {})
        if inputs is not None and not isinstance(inputs, dict):
            errors.append(f"node {node_id} ({ct}): 'inputs' must be an object {{name: value}}, got "
                          f"{type(inputs).__name__}.")
    if errors:
        more = "\n  - ..." if len(errors) > 20 else ""
        raise WorkflowError(f"{source} is not a valid API-format workflow:\n  - " + "\n  - ".join(errors[:20]) + more +
                            "\nExport it again with Workflow > Export (API).")


def _parse_value(text: str):
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def apply_overrides(prompt: dict, sets: list[str] | None) -> dict:
    """Apply ``NODE.INPUT=VALUE`` overrides (NODE = id or ``_meta.title``; VALUE parsed as JSON, else a string)."""
    prompt = json.loads(json.dumps(prompt))
    for item in sets or []:
        if "=" not in item or "." not in item.split("=", 1)[0]:
            raise WorkflowError(f"--set {item!r}: write NODE.INPUT=VALUE, e.g. --set 5.steps=20.")
        target, value = item.split("=", 1)
        node_ref, name = target.rsplit(".", 1)
        node_id = node_ref if node_ref in prompt else next(
            (k for k, v in prompt.items()
             if isinstance(v.get("_meta"), dict) and v["_meta"].get("title") == node_ref), None)
        if node_id is None:
            raise WorkflowError(f"--set {item!r}: no node with id or title {node_ref!r} (ids: {sorted(prompt)}).")
        prompt[node_id].setdefault("inputs", {})[name] = _parse_value(value)
    return prompt


def _unknown_input(node_id, node, name, specs) -> str:
    """Error text for an input name the node does not have, with the closest names."""
    import difflib

    close = difflib.get_close_matches(name, list(specs), n=2, cutoff=0.6)
    hint = f" Did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
    return (f"{_where(node_id, node)} has no input '{name}'.{hint} Its inputs are {sorted(specs)}; fix the "
            "name (in --set or in the file).")


# ------------------------------------------------------------------------------------------ validation
def _is_link(value) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) and \
        isinstance(value[0], (str, int))


def _unwrap(value):
    if isinstance(value, dict) and set(value) == {"__value__"}:
        return value["__value__"]
    return value


def _types_match(out_type: str, in_type) -> bool:
    if isinstance(in_type, list):  # combo: fed by a primitive/string output
        return True
    if out_type == "*" or in_type == "*":
        return True
    return bool({t.strip() for t in str(out_type).split(",")} & {t.strip() for t in str(in_type).split(",")})


def _where(node_id, node) -> str:
    return f"node {node_id} ({node.get('class_type')})"


def _coerce(node_id, node, name, spec, value):
    """Check and convert one literal input; returns the value to pass."""
    typ = spec[0]
    opts = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    where = f"{_where(node_id, node)} input '{name}'"
    if isinstance(typ, list) or typ == "COMBO":
        choices = typ if isinstance(typ, list) else opts.get("options", [])
        if value not in choices:
            shown = choices if len(choices) <= 12 else choices[:12] + ["..."]
            raise WorkflowError(f"{where}: {value!r} is not one of the allowed values {shown}.")
        return value
    if typ in ("INT", "FLOAT"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            raise WorkflowError(f"{where}: expected a number, got {value!r}.")
        try:
            num = int(value) if typ == "INT" else float(value)
        except (TypeError, ValueError):
            raise WorkflowError(f"{where}: expected {typ}, got {value!r}.") from None
        if typ == "FLOAT" and not math.isfinite(num):
            raise WorkflowError(f"{where}: {value!r} is not a finite number.")
        lo, hi = opts.get("min"), opts.get("max")
        if lo is not None and num < lo:
            raise WorkflowError(f"{where}: {num} is below the minimum {lo}.")
        if hi is not None and num > hi:
            raise WorkflowError(f"{where}: {num} is above the maximum {hi}.")
        return num
    if typ == "STRING":
        if isinstance(value, (dict, list)):
            raise WorkflowError(f"{where}: expected text, got {type(value).__name__}.")
        return str(value)
    if typ == "BOOLEAN":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        raise WorkflowError(f"{where}: expected true or false, got {value!r}.")
    raise WorkflowError(f"{where}: a {typ} input must be linked to another node's output, not given a value.")


def validate_workflow(prompt: dict, registry: dict) -> dict:
    """Check the whole workflow; returns {node_id: {input: literal value (coerced)}}. Raises WorkflowError
    listing every problem found."""
    check_structure(prompt)
    errors, literals = [], {}
    unknown = sorted({n.get("class_type") for n in prompt.values() if n.get("class_type") not in registry},
                     key=str)
    if unknown:
        raise WorkflowError(f"Unknown node class type(s) {unknown}: the runner only knows the Magic-Boost nodes and "
                            f"{sorted(k for k in registry if not k.startswith('MagicBoost'))}. Nodes of other "
                            "packs need ComfyUI itself.")
    for node_id, node in prompt.items():
        cls = registry[node["class_type"]]
        if getattr(cls, "INPUT_IS_LIST", False) or any(getattr(cls, "OUTPUT_IS_LIST", ()) or ()):
            errors.append(f"{_where(node_id, node)}: list inputs/outputs are not supported by the headless runner.")
        types = cls.INPUT_TYPES()
        specs = {**types.get("required", {}), **types.get("optional", {})}
        inputs = (node.get("inputs") or {})
        lits = literals.setdefault(node_id, {})
        for name in types.get("required", {}):
            if name not in inputs:
                errors.append(f"{_where(node_id, node)}: required input '{name}' is missing.")
        for name, raw in inputs.items():
            if name not in specs:
                errors.append(_unknown_input(node_id, node, name, specs))
                continue
            if _is_link(raw):
                src_id = str(raw[0])
                if src_id not in prompt:
                    errors.append(f"{_where(node_id, node)} input '{name}': linked to node {src_id}, which is not in "
                                  "the workflow.")
                    continue
                src_cls = registry.get(prompt[src_id].get("class_type"))
                if src_cls is None:
                    continue
                outs = tuple(src_cls.RETURN_TYPES)
                if not 0 <= raw[1] < len(outs):
                    errors.append(f"{_where(node_id, node)} input '{name}': node {src_id} has no output {raw[1]} "
                                  f"(it has {len(outs)}).")
                elif not _types_match(outs[raw[1]], specs[name][0]):
                    errors.append(f"{_where(node_id, node)} input '{name}': expects {specs[name][0]}, but node "
                                  f"{src_id} output {raw[1]} is {outs[raw[1]]}.")
                continue
            try:
                lits[name] = _coerce(node_id, node, name, specs[name], _unwrap(raw))
            except WorkflowError as e:
                errors.append(str(e))
    if not any(getattr(registry[n["class_type"]], "OUTPUT_NODE", False) for n in prompt.values()):
        errors.append("The workflow has no output node (e.g. Magic-Boost Save Mesh or Save Image); nothing would run.")
    if errors:
        raise WorkflowError("The workflow is not valid:\n  - " + "\n  - ".join(errors))
    return literals


def execution_order(prompt: dict, registry: dict) -> list[str]:
    """Output nodes and what they depend on, topologically sorted (dependencies first, stable by id)."""
    needed, stack = set(), [k for k, v in prompt.items() if getattr(registry[v["class_type"]], "OUTPUT_NODE", False)]
    while stack:
        nid = stack.pop()
        if nid in needed:
            continue
        needed.add(nid)
        stack += [str(v[0]) for v in (prompt[nid].get("inputs") or {}).values() if _is_link(v)]
    order, state = [], {}

    def deps(nid):
        return [str(v[0]) for v in (prompt[nid].get("inputs") or {}).values() if _is_link(v)]

    for root in sorted(needed, key=lambda k: (len(k), k)):  # iterative DFS: long chains need no recursion
        if state.get(root) == 2:
            continue
        stack = [(root, iter(deps(root)))]
        state[root] = 1
        while stack:
            nid, pending = stack[-1]
            nxt = next(pending, None)
            if nxt is None:
                stack.pop()
                state[nid] = 2
                order.append(nid)
            elif state.get(nxt) == 1:
                path = [n for n, _ in stack]
                cycle = path[path.index(nxt):] + [nxt]
                shown = cycle if len(cycle) <= 12 else cycle[:6] + ["..."] + cycle[-5:]
                raise WorkflowError(f"The workflow has a cycle through nodes {shown}; a node cannot depend on its "
                                    "own output. Remove one of the links.")
            elif state.get(nxt) != 2:
                state[nxt] = 1
                stack.append((nxt, iter(deps(nxt))))
    return order


# ------------------------------------------------------------------------------------------ execution
def _collect_files(ui: dict, output_dir: str) -> list[str]:
    files = []
    for key in ("images", "3d", "gifs", "audio", "video"):
        for item in ui.get(key, []) or []:
            if isinstance(item, dict) and item.get("type", "output") == "output" and "filename" in item:
                files.append(os.path.join(output_dir, item.get("subfolder", "") or "", item["filename"]))
    return files


def run_workflow(prompt: dict, registry: dict | None = None, *, output_dir: str | None = None,
                 input_dir: str | None = None, models_dir: str | None = None, progress: bool = True,
                 compat=None) -> RunResult:
    """Validate and execute an API-format workflow; returns the outputs and the files written."""
    if registry is None:
        registry, compat = default_registry(), compat or comfy_compat
    literals = validate_workflow(prompt, registry)
    order = execution_order(prompt, registry)
    try:  # an unusable output folder is found before any node runs
        out_dir = str(prepare_output_dir(os.path.abspath(output_dir or "output"), "--output-dir").resolve())
    except ValueError as e:
        raise WorkflowError(str(e)) from None
    if compat is not None:
        compat.set_directories(output=out_dir, input=input_dir, models=models_dir)
        compat.set_progress_enabled(progress)
        compat.request_interrupt(False)
    result = RunResult()
    bar = None
    if progress:
        try:
            from tqdm.auto import tqdm

            bar = tqdm(total=len(order), desc="workflow", unit="node")
        except Exception:  # pragma: no cover
            bar = None
    try:
        for nid in order:
            node = prompt[nid]
            cls = registry[node["class_type"]]
            kwargs = dict(literals.get(nid, {}))
            types = cls.INPUT_TYPES()
            known = {**types.get("required", {}), **types.get("optional", {})}
            for name, raw in (node.get("inputs") or {}).items():
                if name in known and _is_link(raw):
                    kwargs[name] = result.outputs[str(raw[0])][raw[1]]
            if bar is not None:
                bar.set_postfix_str(f"{nid} {node['class_type']}")
            t0 = time.perf_counter()
            try:
                out = getattr(cls(), cls.FUNCTION)(**kwargs)
            except WorkflowError:
                raise
            except Exception as e:
                raise WorkflowError(f"{_where(nid, node)} failed: {type(e).__name__}: {e}") from e
            result.seconds[nid] = time.perf_counter() - t0
            ui = None
            if isinstance(out, dict):
                ui = out.get("ui")
                out = out.get("result", ())
            out = tuple(out) if out is not None else ()
            result.outputs[nid] = out
            if ui:
                result.ui[nid] = ui
                result.files += _collect_files(ui, out_dir)
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return result


# ------------------------------------------------------------------------------------------ CLI
PROG = "nodes.runner"  # run as ``python -m nodes.runner``; the prefix of its messages


def _cmd_run(args) -> int:
    try:
        prompt = apply_overrides(load_workflow(args.workflow), args.set)
        registry = default_registry()
        if args.dry_run:
            validate_workflow(prompt, registry)
            order = execution_order(prompt, registry)
            print("workflow is valid; would run: " + ", ".join(f"{n} ({prompt[n]['class_type']})" for n in order))
            return 0
        previous = signal.getsignal(signal.SIGINT)

        def on_sigint(signum, frame):  # first Ctrl-C: stop refinement gracefully; second: abort
            if comfy_compat.interrupted():
                signal.signal(signal.SIGINT, previous)
                raise KeyboardInterrupt
            print(f"\n{PROG}: stopping after the current step (Ctrl-C again to abort)...", file=sys.stderr)
            comfy_compat.request_interrupt(True)

        signal.signal(signal.SIGINT, on_sigint)
        try:
            result = run_workflow(prompt, registry, output_dir=args.output_dir, input_dir=args.input_dir,
                                  models_dir=args.models_dir, progress=not args.quiet, compat=comfy_compat)
        finally:
            signal.signal(signal.SIGINT, previous)
    except WorkflowError as e:
        print(f"{PROG}: {e}", file=sys.stderr)
        return 1
    total = sum(result.seconds.values())
    print(f"{PROG}: {len(result.outputs)} nodes in {total:.1f} s; {len(result.files)} file(s) written:")
    for f in result.files:
        print(f"  {f}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=f"python -m {PROG}", description=__doc__.splitlines()[0],
                                epilog="Exit codes: 0 done, 1 the workflow cannot run, 2 bad option, 130 interrupted.")
    add_common_options(p)
    p.add_argument("workflow", help="workflow in ComfyUI's API format (e.g. workflows/api/refine_instant3d_api.json)")
    p.add_argument("--output-dir", default="output", help="where saved meshes/images go (default: output/)")
    p.add_argument("--input-dir", default=None,
                   help="folder for input files named by the workflow (default: ./input; relative paths are also "
                        "looked up in the pack folder)")
    p.add_argument("--models-dir", default=None, help="folder of converted models (default: $MAGICBOOST_MODELS_DIR "
                   "or ./models/magicboost)")
    p.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE",
                   help="override an input, e.g. --set 6.steps=20 (NODE = id or title; VALUE is JSON or text); "
                        "repeatable")
    p.add_argument("--dry-run", action="store_true", help="only validate the workflow and print the execution order")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_cmd_run)
    return p


def main(argv=None) -> int:
    """Run a workflow from the command line; returns the exit code (0 done, 1 the workflow cannot run,
    2 bad option such as ``--threads 0``, 130 interrupted)."""
    return run_command(build_parser().parse_args(argv), PROG)


if __name__ == "__main__":
    sys.exit(main())

"""What the shapes world says about a scene: captions, question/answer pairs (colour, count, position,
existence), grounding answers in SEED-X's box format, and edit instructions with their target scenes."""
from __future__ import annotations

import dataclasses
import random

from seedx_jax.agent.boxes import box_text
from seedx_jax.demo.world import COLOURS, SHAPES, Obj, Scene, WorldConfig, place

NUMBERS = ("zero", "one", "two", "three", "four", "five")


def where(obj: Obj) -> str:
    column, row = obj.cell
    return "the center" if (column, row) == ("center", "middle") else f"the {row} {column}"


def name(obj: Obj) -> str:
    return f"{obj.colour} {obj.shape}"


def caption(scene: Scene) -> str:
    parts = [f"a {name(o)} at {where(o)}" for o in scene.objects]
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"{listed} on a {scene.background} background"


def _unique(scene: Scene, obj: Obj) -> bool:
    return sum(o.shape == obj.shape and o.colour == obj.colour for o in scene.objects) == 1


def questions(scene: Scene, rng: random.Random) -> list[tuple[str, str]]:
    """One question of each kind the scene supports: colour, count, position, existence."""
    qa = []
    shapes_once = [o for o in scene.objects if sum(p.shape == o.shape for p in scene.objects) == 1]
    if shapes_once:
        obj = rng.choice(shapes_once)
        qa.append((f"What colour is the {obj.shape}?", f"The {obj.shape} is {obj.colour}."))
    shape = rng.choice(SHAPES)
    count = sum(o.shape == shape for o in scene.objects)
    qa.append((f"How many {shape}s are there?", f"There {'is' if count == 1 else 'are'} {NUMBERS[count]}."))
    unique = [o for o in scene.objects if _unique(scene, o)]
    if unique:
        obj = rng.choice(unique)
        qa.append((f"Where is the {name(obj)}?", f"The {name(obj)} is at {where(obj)}."))
    if rng.random() < 0.5:
        obj = rng.choice(scene.objects)
        qa.append((f"Is there a {name(obj)}?", "Yes."))
    else:
        absent = [(c, s) for c in sorted(COLOURS) for s in SHAPES
                  if not any(o.colour == c and o.shape == s for o in scene.objects)]
        c, s = rng.choice(absent)
        qa.append((f"Is there a {c} {s}?", "No."))
    rng.shuffle(qa)
    return qa


def grounding(scene: Scene, rng: random.Random) -> tuple[str, str] | None:
    """("Find the red circle.", "<box_start><loc-..>x4<box_end>") for an object named uniquely."""
    unique = [o for o in scene.objects if _unique(scene, o)]
    if not unique:
        return None
    obj = rng.choice(unique)
    return f"Find the {name(obj)}.", box_text(obj.box(scene.width, scene.height), (scene.width, scene.height))


def edit(scene: Scene, rng: random.Random, cfg: WorldConfig = WorldConfig()) -> tuple[str, Scene] | None:
    """(instruction, target scene) for one of: recolour, remove, add, move (None when none applies)."""
    unique = [o for o in scene.objects if _unique(scene, o)]
    kinds = ["add"] + (["recolour", "move"] if unique else [])
    kinds += ["remove"] if unique and len(scene.objects) > 1 else []
    kind = rng.choice(kinds)
    if kind == "add":
        shape, colour = rng.choice(SHAPES), rng.choice(sorted(COLOURS))
        new = place(rng, scene, shape, colour, cfg)
        if new is None:
            return None
        return f"Add a {colour} {shape} at {where(new)}.", scene.replace(objects=scene.objects + (new,))
    obj = rng.choice(unique)
    rest = tuple(o for o in scene.objects if o is not obj)
    if kind == "remove":
        return f"Remove the {name(obj)}.", scene.replace(objects=rest)
    if kind == "recolour":
        colour = rng.choice([c for c in sorted(COLOURS) if c != obj.colour])
        changed = Obj(obj.shape, colour, obj.cx, obj.cy, obj.size)
        return f"Make the {name(obj)} {colour}.", scene.replace(objects=rest + (changed,))
    same_size = dataclasses.replace(cfg, min_size=obj.size, max_size=obj.size)
    for _ in range(50):  # move: to another grid cell
        moved = place(rng, scene.replace(objects=rest), obj.shape, obj.colour, same_size)
        if moved is not None and moved.cell != obj.cell:
            return f"Move the {name(obj)} to {where(moved)}.", scene.replace(objects=rest + (moved,))
    return None

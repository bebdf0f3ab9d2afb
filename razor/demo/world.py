"""The demo world: a seeded, procedural image–caption generator on three axes.

Objects (shapes) are drawn in styles (renderings); identities are face-like drawings whose
identity is fixed by several features while pose, scale, expression, lighting and
background vary. Every image is a function of (seed, index), so any split can be rebuilt.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

IMAGE_SIZE = 32
_CANVAS = 96  # drawn at 3x, then downsampled with antialiasing

OBJECTS = ("circle", "square", "triangle", "star", "heart", "cross", "moon", "arrow")
STYLES = ("solid", "outline", "striped", "dotted", "checkered", "gradient", "noisy", "blurry")

# Each identity is a fixed combination of features; every pair differs in at least two.
IDENTITIES = {
    "alice": dict(skin=0, hair="long", hair_color=3, eyes=0, glasses=False, beard=False, face="oval"),
    "bruno": dict(skin=2, hair="short", hair_color=0, eyes=2, glasses=False, beard=True, face="round"),
    "chen": dict(skin=1, hair="short", hair_color=0, eyes=2, glasses=True, beard=False, face="oval"),
    "dara": dict(skin=2, hair="long", hair_color=1, eyes=1, glasses=False, beard=False, face="round"),
    "emil": dict(skin=0, hair="spiky", hair_color=2, eyes=0, glasses=False, beard=False, face="round"),
    "farah": dict(skin=1, hair="long", hair_color=0, eyes=1, glasses=True, beard=False, face="oval"),
    "gus": dict(skin=0, hair="bald", hair_color=4, eyes=2, glasses=False, beard=True, face="oval"),
    "hana": dict(skin=1, hair="bun", hair_color=1, eyes=0, glasses=False, beard=False, face="round"),
    "ivan": dict(skin=0, hair="short", hair_color=4, eyes=1, glasses=True, beard=True, face="round"),
    "juno": dict(skin=2, hair="spiky", hair_color=3, eyes=2, glasses=True, beard=False, face="oval"),
}

AXES = ("objects", "styles", "identities")

_SKIN = [(238, 205, 170), (196, 146, 104), (121, 80, 52)]
_HAIR = [(25, 20, 20), (110, 60, 25), (225, 190, 90), (180, 50, 25), (165, 165, 170)]
_EYES = [(40, 90, 200), (40, 150, 60), (90, 50, 20)]
_PALETTE = [
    (220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 190, 30),
    (170, 50, 190), (30, 180, 190), (240, 120, 30), (240, 240, 240),
]

# Caption templates: some name both object and style, some only one axis.
SHAPE_TEMPLATES = (
    "a {style} {object}",
    "a picture of a {style} {object}",
    "a {object} drawn in {style} style",
    "a picture of a {object}",
    "a {object}",
    "a {style} drawing",
    "something drawn in {style} style",
)
FACE_TEMPLATES = (
    "a photo of {identity}",
    "a portrait of {identity}",
    "the face of {identity}",
    "{identity}",
)
# The prompt that names one label of an axis (zero-shot classification, concept text).
LABEL_PROMPTS = {
    "objects": "a picture of a {}",
    "styles": "a {} drawing",
    "identities": "a photo of {}",
}
# The wordings the forget objective optimises over and held-out ones only the final metrics use
# (razor.templates): the caption templates that name the axis, split between the two.
TEMPLATES = {
    "objects": {"forget": ["a picture of a {}", "a {}", "a {styles} {}"],
                "heldout": ["a picture of a {styles} {}", "a {} drawn in {styles} style"]},
    "styles": {"forget": ["a {} drawing", "something drawn in {} style", "a {} {objects}"],
               "heldout": ["a picture of a {} {objects}", "a {objects} drawn in {} style"]},
    "identities": {"forget": ["a photo of {}", "the face of {}"], "heldout": ["a portrait of {}", "{}"]},
}


def labels() -> dict[str, tuple[str, ...]]:
    """The world's labels per axis."""
    return {"objects": OBJECTS, "styles": STYLES, "identities": tuple(IDENTITIES)}


def vocabulary() -> list[str]:
    """Every word a caption or label prompt of this world can contain."""
    words = set(OBJECTS) | set(STYLES) | set(IDENTITIES)
    for t in SHAPE_TEMPLATES + FACE_TEMPLATES + tuple(LABEL_PROMPTS.values()):
        words |= {w for w in t.replace("{}", " ").split() if not w.startswith("{")}
    return sorted(words)


@dataclass(frozen=True)
class Sample:
    """One generated image with its labels and caption."""

    image: Image.Image
    caption: str
    object: str | None
    style: str | None
    identity: str | None


def _shape_polygon(obj: str, cx: float, cy: float, r: float, rot: float) -> list | None:
    def rotate(points):
        c, s = math.cos(rot), math.sin(rot)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in points]

    if obj == "square":
        return rotate([(-r * 0.8, -r * 0.8), (r * 0.8, -r * 0.8), (r * 0.8, r * 0.8), (-r * 0.8, r * 0.8)])
    if obj == "triangle":
        return rotate([(0, -r), (r * 0.95, r * 0.75), (-r * 0.95, r * 0.75)])
    if obj == "star":
        pts = []
        for i in range(10):
            a = -math.pi / 2 + i * math.pi / 5
            rr = r if i % 2 == 0 else r * 0.42
            pts.append((rr * math.cos(a), rr * math.sin(a)))
        return rotate(pts)
    if obj == "cross":
        w = r * 0.33
        return rotate([(-w, -r), (w, -r), (w, -w), (r, -w), (r, w), (w, w), (w, r), (-w, r),
                       (-w, w), (-r, w), (-r, -w), (-w, -w)])
    if obj == "arrow":
        w = r * 0.28
        return rotate([(-r, -w), (r * 0.2, -w), (r * 0.2, -r * 0.7), (r, 0), (r * 0.2, r * 0.7),
                       (r * 0.2, w), (-r, w)])
    if obj == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x * r / 17, y * r / 17))
        return rotate(pts)
    return None  # circle and moon are drawn from ellipses


def _shape_mask(obj: str, rng: random.Random) -> Image.Image:
    """A white-on-black mask of the object, near the centre, with random size and rotation."""
    mask = Image.new("L", (_CANVAS, _CANVAS), 0)
    d = ImageDraw.Draw(mask)
    r = rng.uniform(0.30, 0.38) * _CANVAS
    cx = _CANVAS / 2 + rng.uniform(-4, 4)
    cy = _CANVAS / 2 + rng.uniform(-4, 4)
    rot = rng.uniform(-0.25, 0.25)
    poly = _shape_polygon(obj, cx, cy, r, rot)
    if poly is not None:
        d.polygon(poly, fill=255)
    elif obj == "circle":
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
    else:  # moon: a disc with an offset disc cut out
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=255)
        off = r * 0.55
        a = rot + math.pi / 4
        ox, oy = cx + off * math.cos(a), cy - off * math.sin(a)
        d.ellipse([ox - r * 0.85, oy - r * 0.85, ox + r * 0.85, oy + r * 0.85], fill=0)
    return mask


def _texture(style: str, color: tuple, rng: random.Random, nrng: np.random.Generator) -> np.ndarray:
    """The fill of a shape in a style, as an HxWx3 float array."""
    h = w = _CANVAS
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    col = np.array(color, np.float32)
    if style == "striped":
        period = rng.uniform(10, 14)
        ang = rng.uniform(0, math.pi)
        on = (np.sin((xx * math.cos(ang) + yy * math.sin(ang)) * 2 * math.pi / period) > 0)[..., None]
        return np.where(on, col, col * 0.2)
    if style == "dotted":
        period = rng.uniform(11, 14)
        px, py = rng.uniform(0, period), rng.uniform(0, period)
        dx = (xx + px) % period - period / 2
        dy = (yy + py) % period - period / 2
        on = ((dx ** 2 + dy ** 2) < (period * 0.3) ** 2)[..., None]
        return np.where(on, col, col * 0.2)
    if style == "checkered":
        period = rng.uniform(11, 15)
        on = ((np.floor(xx / period) + np.floor(yy / period)) % 2 == 0)[..., None]
        return np.where(on, col, col * 0.2)
    if style == "gradient":
        ang = rng.uniform(0, 2 * math.pi)
        t = (xx * math.cos(ang) + yy * math.sin(ang))
        t = (t - t.min()) / (t.max() - t.min() + 1e-6)
        return col * (0.1 + 0.9 * t[..., None])
    if style == "noisy":
        noise = nrng.uniform(0.0, 1.0, size=(h // 3, w // 3, 1)).astype(np.float32)
        noise = np.kron(noise, np.ones((3, 3, 1), np.float32))
        return col * noise
    return np.broadcast_to(col, (h, w, 3)).copy()


def _background(rng: random.Random) -> tuple:
    g = rng.randint(40, 150)
    return (g + rng.randint(-25, 25), g + rng.randint(-25, 25), g + rng.randint(-25, 25))


def render_shape(obj: str, style: str, rng: random.Random, nrng: np.random.Generator) -> Image.Image:
    """One object in one style on a plain background."""
    color = rng.choice(_PALETTE)
    bg = np.array(_background(rng), np.float32)
    mask = _shape_mask(obj, rng)
    if style == "outline":
        inner = mask.filter(ImageFilter.MinFilter(9))
        mask = Image.fromarray(np.clip(np.asarray(mask, np.int16) - np.asarray(inner, np.int16), 0, 255).astype(np.uint8))
    m = np.asarray(mask, np.float32)[..., None] / 255.0
    fill = _texture(style, color, rng, nrng)
    img = Image.fromarray(np.clip(bg * (1 - m) + fill * m, 0, 255).astype(np.uint8))
    if style == "blurry":
        img = img.filter(ImageFilter.GaussianBlur(rng.uniform(4.5, 6.0)))
    return img.resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def render_face(name: str, rng: random.Random) -> Image.Image:
    """A face of one identity with random pose, scale, expression, lighting and background."""
    f = IDENTITIES[name]
    c = _CANVAS
    img = Image.new("RGB", (c, c), _background(rng))
    d = ImageDraw.Draw(img)
    scale = rng.uniform(0.8, 1.05)
    cx = c / 2 + rng.uniform(-9, 9)
    cy = c / 2 + rng.uniform(-6, 8)
    turn = rng.uniform(-1, 1)  # head turn: shifts features sideways
    rx = (0.30 if f["face"] == "round" else 0.25) * c * scale
    ry = (0.30 if f["face"] == "round" else 0.36) * c * scale
    skin, hair, eyes = _SKIN[f["skin"]], _HAIR[f["hair_color"]], _EYES[f["eyes"]]
    # hair behind the head
    if f["hair"] == "long":
        d.rectangle([cx - rx * 1.15, cy - ry * 0.4, cx + rx * 1.15, cy + ry * 1.05], fill=hair)
    d.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    # hair on top
    if f["hair"] in ("short", "long"):
        d.chord([cx - rx * 1.08, cy - ry * 1.12, cx + rx * 1.08, cy + ry * 0.35], 180, 360, fill=hair)
    elif f["hair"] == "spiky":
        for i in range(6):
            x0 = cx - rx + i * rx / 2.5
            d.polygon([(x0, cy - ry * 0.55), (x0 + rx / 5, cy - ry * 1.35), (x0 + rx / 2.5, cy - ry * 0.55)], fill=hair)
    elif f["hair"] == "bun":
        d.chord([cx - rx * 1.05, cy - ry * 1.08, cx + rx * 1.05, cy + ry * 0.2], 180, 360, fill=hair)
        d.ellipse([cx - rx * 0.45, cy - ry * 1.55, cx + rx * 0.45, cy - ry * 0.75], fill=hair)
    fx = cx + turn * rx * 0.22
    ey = cy - ry * 0.05
    er = rx * 0.17
    for sx in (-1, 1):
        ex = fx + sx * rx * 0.42
        d.ellipse([ex - er, ey - er, ex + er, ey + er], fill=(250, 250, 250))
        d.ellipse([ex - er * 0.62, ey - er * 0.62, ex + er * 0.62, ey + er * 0.62], fill=eyes)
        if f["glasses"]:
            d.ellipse([ex - er * 1.6, ey - er * 1.6, ex + er * 1.6, ey + er * 1.6], outline=(15, 15, 15), width=3)
    if f["glasses"]:
        d.line([fx - rx * 0.2, ey, fx + rx * 0.2, ey], fill=(15, 15, 15), width=3)
    if f["beard"]:
        d.chord([cx - rx * 0.95, cy - ry * 0.1, cx + rx * 0.95, cy + ry * 1.05], 0, 180, fill=hair)
    # expression: mouth curvature
    expr = rng.choice(("smile", "neutral", "frown", "open"))
    my, mw = cy + ry * 0.55, rx * 0.38
    mouth_color = (150, 40, 40)
    if expr == "smile":
        d.arc([fx - mw, my - mw * 0.6, fx + mw, my + mw * 0.5], 20, 160, fill=mouth_color, width=4)
    elif expr == "frown":
        d.arc([fx - mw, my, fx + mw, my + mw], 200, 340, fill=mouth_color, width=4)
    elif expr == "open":
        d.ellipse([fx - mw * 0.5, my - mw * 0.3, fx + mw * 0.5, my + mw * 0.4], fill=mouth_color)
    else:
        d.line([fx - mw * 0.8, my, fx + mw * 0.8, my], fill=mouth_color, width=4)
    # lighting: brightness and a directional shade
    arr = np.asarray(img, np.float32)
    light = rng.uniform(0.7, 1.15)
    ang = rng.uniform(0, 2 * math.pi)
    yy, xx = np.mgrid[0:c, 0:c].astype(np.float32) / c - 0.5
    shade = 1.0 + 0.3 * (xx * math.cos(ang) + yy * math.sin(ang))
    arr = np.clip(arr * light * shade[..., None], 0, 255).astype(np.uint8)
    return Image.fromarray(arr).resize((IMAGE_SIZE, IMAGE_SIZE), Image.LANCZOS)


def sample(seed: int, index: int, kind: str, label: tuple) -> Sample:
    """Generate the image for (seed, index): a shape (object, style) or a face (identity,)."""
    rng = random.Random(f"{seed}:{index}")
    nrng = np.random.default_rng([seed, index])
    if kind == "shape":
        obj, style = label
        image = render_shape(obj, style, rng, nrng)
        caption = rng.choice(SHAPE_TEMPLATES).format(object=obj, style=style)
        return Sample(image, caption, obj, style, None)
    (name,) = label
    image = render_face(name, rng)
    caption = rng.choice(FACE_TEMPLATES).format(identity=name)
    return Sample(image, caption, None, None, name)


def plan(split: str, seed: int, shapes_per_pair: int, faces_per_identity: int) -> list[tuple[int, str, tuple]]:
    """The (index, kind, label) list for one split; disjoint index ranges per split."""
    offset = {"train": 0, "val": 10_000_000, "test": 20_000_000}[split]
    items: list[tuple[int, str, tuple]] = []
    for obj in OBJECTS:
        for style in STYLES:
            for _ in range(shapes_per_pair):
                items.append((offset + len(items), "shape", (obj, style)))
    for name in IDENTITIES:
        for _ in range(faces_per_identity):
            items.append((offset + len(items), "face", (name,)))
    random.Random(f"{seed}:{split}").shuffle(items)
    return items

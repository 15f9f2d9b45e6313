"""Procedural pedestrians seen by procedural cameras, rendered in batches with plain torch.

An identity is a body shape and an outfit: clothing colours, a pattern on the top, trousers,
shorts or a skirt, sleeves, hair, and optional backpack, shoulder bag, hat and chest logo. A
camera is a background scene, a typical viewpoint and distance, and a photometric chain
(illumination, colour cast, contrast, saturation, gamma, resolution, blur and sensor noise).
Within a camera each image varies the pose, the position, the background and, sometimes, an
occluder in front of the person.

The identity cues survive every camera (the relative layout of colours, patterns, body shape and
accessories), but the nuisances are strong: colours shift with the camera, the backpack shows
only from behind, the logo only from the front, and the background, which fills most of the
frame, belongs to the camera. Matching across cameras therefore has to be learnt.

Everything is drawn from one ``torch.Generator``: the same seed gives the same pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F

VIEWS = ("front", "back", "left", "right")
FRONT, BACK, LEFT, RIGHT = range(4)
TOP_PATTERNS = ("plain", "horizontal stripes", "vertical stripes", "checks", "two-tone")
BOTTOMS = ("trousers", "shorts", "skirt")
BACKGROUND_TEXTURES = ("pillars", "floor tiles", "shelves", "blotches")
REFERENCE_HEIGHT = 128  # image height at which the cameras' blur and resolution are given


def _uniform(generator: torch.Generator, shape, low: float, high: float) -> torch.Tensor:
    return low + (high - low) * torch.rand(shape, generator=generator)


def _chance(generator: torch.Generator, shape, probability: float) -> torch.Tensor:
    return torch.rand(shape, generator=generator) < probability


def hsv_to_rgb(hue: torch.Tensor, saturation: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """HSV in [0, 1] of shape ``(...)`` each -> RGB ``(..., 3)`` in [0, 1]."""
    sector = hue[..., None] * 6.0
    offsets = torch.tensor([5.0, 3.0, 1.0])
    k = torch.remainder(offsets + sector, 6.0)
    ramp = torch.clamp(torch.minimum(k, 4.0 - k), 0.0, 1.0)
    return value[..., None] * (1.0 - saturation[..., None] * ramp)


def _clothing_colours(generator: torch.Generator, count: int) -> torch.Tensor:
    """``(count, 3)`` RGB: a third neutral (black, grey, white), the rest saturated hues."""
    hue = torch.rand(count, generator=generator)
    neutral = _chance(generator, count, 0.3)
    saturation = torch.where(neutral, _uniform(generator, count, 0.0, 0.12), _uniform(generator, count, 0.5, 1.0))
    value = torch.where(neutral, _uniform(generator, count, 0.08, 0.95), _uniform(generator, count, 0.35, 0.95))
    return hsv_to_rgb(hue, saturation, value)


def _palette_pick(generator: torch.Generator, palette: list[list[float]], count: int, jitter: float) -> torch.Tensor:
    table = torch.tensor(palette)
    choice = torch.randint(len(palette), (count,), generator=generator)
    return (table[choice] + _uniform(generator, (count, 3), -jitter, jitter)).clamp(0.0, 1.0)


SKIN_TONES = [[0.96, 0.80, 0.69], [0.89, 0.68, 0.55], [0.76, 0.55, 0.40], [0.55, 0.37, 0.26], [0.36, 0.24, 0.17]]
HAIR_COLOURS = [[0.06, 0.05, 0.05], [0.22, 0.14, 0.08], [0.42, 0.27, 0.14], [0.80, 0.66, 0.40], [0.62, 0.62, 0.62]]


@dataclass(frozen=True)
class Tensors:
    """A bundle of per-row tensors that can be indexed together."""

    def select(self, index: torch.Tensor):
        return type(self)(**{f.name: getattr(self, f.name)[index] for f in fields(self)})


@dataclass(frozen=True)
class Identities(Tensors):
    """Per-identity attributes, each ``(N,)`` or ``(N, 3)`` for colours. Lengths are fractions
    of the person's height."""

    head_radius: torch.Tensor
    shoulder_half_width: torch.Tensor
    hip_half_width: torch.Tensor
    hip_height: torch.Tensor
    leg_half_width: torch.Tensor
    arm_half_width: torch.Tensor
    top_colour: torch.Tensor
    top_second_colour: torch.Tensor
    top_pattern: torch.Tensor
    stripe_period: torch.Tensor
    short_sleeves: torch.Tensor
    bottom_colour: torch.Tensor
    bottom_kind: torch.Tensor
    shoe_colour: torch.Tensor
    skin_colour: torch.Tensor
    hair_colour: torch.Tensor
    long_hair: torch.Tensor
    has_backpack: torch.Tensor
    backpack_colour: torch.Tensor
    has_bag: torch.Tensor
    bag_side: torch.Tensor
    bag_colour: torch.Tensor
    has_hat: torch.Tensor
    hat_colour: torch.Tensor
    has_logo: torch.Tensor
    logo_colour: torch.Tensor


def sample_identities(count: int, generator: torch.Generator) -> Identities:
    """Draw ``count`` identities."""
    g = generator
    broad = _uniform(g, count, 0.0, 1.0)  # one build factor ties shoulders, hips and limbs together
    return Identities(
        head_radius=_uniform(g, count, 0.055, 0.07),
        shoulder_half_width=0.09 + 0.07 * broad + _uniform(g, count, -0.01, 0.01),
        hip_half_width=0.075 + 0.05 * broad + _uniform(g, count, -0.01, 0.01),
        hip_height=_uniform(g, count, 0.46, 0.56),
        leg_half_width=0.032 + 0.02 * broad,
        arm_half_width=0.022 + 0.014 * broad,
        top_colour=_clothing_colours(g, count),
        top_second_colour=_clothing_colours(g, count),
        top_pattern=torch.randint(len(TOP_PATTERNS), (count,), generator=g),
        stripe_period=_uniform(g, count, 0.035, 0.08),
        short_sleeves=_chance(g, count, 0.4),
        bottom_colour=_clothing_colours(g, count),
        bottom_kind=torch.multinomial(torch.tensor([0.6, 0.25, 0.15]), count, replacement=True, generator=g),
        shoe_colour=_clothing_colours(g, count) * 0.7,
        skin_colour=_palette_pick(g, SKIN_TONES, count, 0.04),
        hair_colour=_palette_pick(g, HAIR_COLOURS, count, 0.05),
        long_hair=_chance(g, count, 0.35),
        has_backpack=_chance(g, count, 0.35),
        backpack_colour=_clothing_colours(g, count),
        has_bag=_chance(g, count, 0.3),
        bag_side=torch.where(_chance(g, count, 0.5), 1.0, -1.0),
        bag_colour=_clothing_colours(g, count),
        has_hat=_chance(g, count, 0.15),
        hat_colour=_clothing_colours(g, count),
        has_logo=_chance(g, count, 0.3),
        logo_colour=_clothing_colours(g, count),
    )


@dataclass(frozen=True)
class Cameras(Tensors):
    """Per-camera attributes, ``(C,)``, ``(C, 3)`` or ``(C, 4)`` for view probabilities."""

    view_probabilities: torch.Tensor
    person_height: torch.Tensor
    person_top: torch.Tensor
    gain: torch.Tensor
    colour_cast: torch.Tensor
    gamma: torch.Tensor
    contrast: torch.Tensor
    saturation: torch.Tensor
    light_slope: torch.Tensor
    blur_sigma: torch.Tensor
    downscale: torch.Tensor
    noise_std: torch.Tensor
    wall_colour: torch.Tensor
    floor_colour: torch.Tensor
    texture_colour: torch.Tensor
    horizon: torch.Tensor
    texture: torch.Tensor
    texture_period: torch.Tensor


def sample_cameras(count: int, strength: float, generator: torch.Generator) -> Cameras:
    """Draw ``count`` cameras; ``strength`` in [0, 1] scales every nuisance: at 0 all cameras
    share one scene, one viewpoint mix and a neutral photometric chain."""
    g = generator
    s = float(strength)
    # Each camera mostly sees people from one side of the walkway.
    dominant = torch.randperm(4, generator=g).repeat(count // 4 + 1)[:count]
    view_probabilities = torch.full((count, 4), (1.0 - (0.25 + 0.5 * s)) / 3.0)
    view_probabilities[torch.arange(count), dominant] = 0.25 + 0.5 * s
    cast = torch.exp(s * 0.22 * torch.randn((count, 3), generator=g))
    # The scene all cameras would share at strength 0; each camera moves away from it with s.
    shared_scene = _clothing_colours(g, 3)
    shared_horizon = _uniform(g, 1, 0.5, 0.8)
    shared_period = _uniform(g, 1, 0.12, 0.35)
    shared_texture = torch.randint(len(BACKGROUND_TEXTURES), (1,), generator=g)
    own_texture = torch.randint(len(BACKGROUND_TEXTURES), (count,), generator=g)
    return Cameras(
        view_probabilities=view_probabilities,
        person_height=0.84 + s * _uniform(g, count, -0.14, 0.1),
        person_top=_uniform(g, count, 0.02, 0.06),
        gain=torch.exp(s * _uniform(g, count, -0.6, 0.35)),
        colour_cast=cast / cast.mean(dim=1, keepdim=True),
        gamma=torch.exp(s * _uniform(g, count, -0.35, 0.35)),
        contrast=1.0 + s * _uniform(g, count, -0.45, 0.15),
        saturation=1.0 + s * _uniform(g, count, -0.7, 0.2),
        light_slope=s * _uniform(g, count, -1.5, 1.5),
        blur_sigma=s * _uniform(g, count, 0.0, 1.4),  # pixels at REFERENCE_HEIGHT
        # Some cameras see the scene at half or a third of the resolution.
        downscale=1 + (torch.rand(count, generator=g) < 0.5 * s).long() * torch.randint(1, 3, (count,), generator=g),
        noise_std=0.01 + s * _uniform(g, count, 0.0, 0.04),
        wall_colour=_towards(shared_scene[0], _clothing_colours(g, count), s),
        floor_colour=_towards(shared_scene[1], _clothing_colours(g, count), s),
        texture_colour=_towards(shared_scene[2], _clothing_colours(g, count), s),
        horizon=_towards(shared_horizon, _uniform(g, count, 0.5, 0.8), s),
        texture=torch.where(torch.rand(count, generator=g) < s, own_texture, shared_texture),
        texture_period=_towards(shared_period, _uniform(g, count, 0.12, 0.35), s),
    )


def _towards(shared: torch.Tensor, own: torch.Tensor, strength: float) -> torch.Tensor:
    """Each camera's own value at strength 1, the scene shared by all cameras at strength 0."""
    return shared + strength * (own - shared)


@dataclass(frozen=True)
class Shots(Tensors):
    """Per-image variation within a camera, each ``(B,)``."""

    view: torch.Tensor
    stride: torch.Tensor
    arm_swing: torch.Tensor
    centre: torch.Tensor
    height_jitter: torch.Tensor
    top_jitter: torch.Tensor
    light_jitter: torch.Tensor
    texture_shift: torch.Tensor
    occluder: torch.Tensor
    occluder_position: torch.Tensor
    occluder_width: torch.Tensor


def sample_shots(cameras: Cameras, camera_of_image: torch.Tensor, generator: torch.Generator) -> Shots:
    """Draw the per-image pose, position and clutter for images taken by ``camera_of_image`` (B,)."""
    g = generator
    count = camera_of_image.numel()
    probabilities = cameras.view_probabilities[camera_of_image]
    return Shots(
        view=torch.multinomial(probabilities, 1, generator=g).squeeze(1),
        stride=_uniform(g, count, -1.0, 1.0),
        arm_swing=_uniform(g, count, -1.0, 1.0),
        centre=_uniform(g, count, -0.03, 0.03),
        height_jitter=_uniform(g, count, -0.04, 0.04),
        top_jitter=_uniform(g, count, -0.02, 0.02),
        light_jitter=_uniform(g, count, 0.9, 1.1),
        texture_shift=torch.rand(count, generator=g),
        occluder=torch.multinomial(torch.tensor([0.84, 0.08, 0.08]), count, replacement=True, generator=g),
        occluder_position=torch.rand(count, generator=g),
        occluder_width=_uniform(g, count, 0.06, 0.14),
    )


def _column(values: torch.Tensor) -> torch.Tensor:
    """``(B,)`` -> ``(B, 1, 1)`` for broadcasting against ``(B, H, W)``."""
    return values[:, None, None]


def _colour(values: torch.Tensor) -> torch.Tensor:
    """``(B, 3)`` -> ``(B, 3, 1, 1)``."""
    return values[:, :, None, None]


def _image_axes(height: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel centres as ``rows (1, H, 1)`` in [0, 1] from the top and ``cols (1, 1, W)`` from the
    vertical mid-line, both in units of the image height. Masks built from them broadcast to
    ``(B, H, W)`` only where a row and a column condition meet, which keeps rendering cheap."""
    rows = (torch.arange(height, dtype=torch.float32) + 0.5) / height
    cols = (torch.arange(width, dtype=torch.float32) + 0.5 - width / 2) / height
    return rows[None, :, None], cols[None, None, :]


def _lookup(palette: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Colour a label map: ``palette (B, P, 3)``, ``labels (B, H, W)`` int -> ``(B, 3, H, W)``."""
    count, height, width = labels.shape
    index = labels.reshape(count, height * width, 1).long().expand(-1, -1, 3)
    return torch.gather(palette, 1, index).reshape(count, height, width, 3).permute(0, 3, 1, 2)


def _smooth_noise(count: int, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """Low-frequency noise ``(B, 3, H, W)``: a 5x3 grid of normal draws, bilinearly interpolated
    (as two small matrix products)."""
    coarse = torch.randn((count, 3, 5, 3), generator=generator)
    row_weights = _linear_interpolation_matrix(5, height)
    col_weights = _linear_interpolation_matrix(3, width)
    return torch.einsum("hk,bckl,wl->bchw", row_weights, coarse, col_weights)


def _linear_interpolation_matrix(source: int, target: int) -> torch.Tensor:
    """``(target, source)`` weights of linear interpolation with centres aligned."""
    position = ((torch.arange(target, dtype=torch.float32) + 0.5) * source / target - 0.5).clamp(0, source - 1)
    below = position.floor().long().clamp(max=source - 2) if source > 1 else position.long()
    weights = torch.zeros((target, source))
    if source == 1:
        weights[:, 0] = 1.0
        return weights
    fraction = position - below
    weights[torch.arange(target), below] = 1.0 - fraction
    weights[torch.arange(target), below + 1] = fraction
    return weights


WALL, FLOOR, TEXTURE = range(3)


def render_background(cameras: Cameras, shots: Shots, height: int, width: int, generator: torch.Generator) -> torch.Tensor:
    """The camera's scene behind the person: ``(B, 3, H, W)`` float in [0, 1].

    ``cameras`` and ``shots`` hold one row per image.
    """
    count = shots.view.numel()
    u, v = _image_axes(height, width)
    horizon = _column(cameras.horizon)
    below = u > horizon  # (B, H, 1)
    period = _column(cameras.texture_period)
    shift = _column(shots.texture_shift)
    phase = v / period + shift  # (B, 1, W)
    texture = _column(cameras.texture)
    depth = (u - horizon).clamp(min=0.02)
    pillars = (texture == 0) & ~below & (torch.remainder(phase, 1.0) < 0.3)
    tiles = (texture == 1) & below & (
        (torch.remainder(phase * (0.6 / depth.sqrt()), 1.0) < 0.5) ^ (torch.remainder(0.15 / depth, 1.0) < 0.5)
    )
    shelves = (texture == 2) & ~below & (torch.remainder(u / (period * 0.6) + shift, 1.0) < 0.25)
    labels = torch.where(below, FLOOR, WALL).to(torch.uint8).expand(count, height, width).clone()
    labels.masked_fill_(pillars | tiles | shelves, TEXTURE)
    palette = torch.stack([cameras.wall_colour, cameras.floor_colour, cameras.texture_colour], dim=1)
    # A soft vertical gradient: lit from above, darker towards the far edge of the floor.
    shade = 1.0 + 0.25 * (horizon - u).clamp(-0.5, 0.5)
    canvas = _lookup(palette, labels) * shade[:, None]
    # Low-frequency blotches on every camera (stronger on the "blotches" texture): lighting and
    # dirt that differ from one image to the next.
    amplitude = torch.where(cameras.texture == 3, 0.18, 0.06)
    return canvas + _colour(amplitude[:, None].expand(-1, 3)) * _smooth_noise(count, height, width, generator)


# Part labels of the person map; 0 shows the background.
(BACKGROUND, BOTTOM, SKIN, SHOE, TOP, TOP_SECOND, HAND, HAIR, HAT, BACKPACK, BAG, LOGO, OCCLUDER) = range(13)


def _person_palette(identities: Identities, cameras: Cameras) -> torch.Tensor:
    """``(B, 13, 3)`` colours in the order of the part labels."""
    i = identities
    return torch.stack(
        [
            torch.zeros_like(i.top_colour), i.bottom_colour, i.skin_colour, i.shoe_colour, i.top_colour,
            i.top_second_colour, i.skin_colour * 0.9, i.hair_colour, i.hat_colour, i.backpack_colour,
            i.bag_colour, i.logo_colour, cameras.texture_colour * 0.8,
        ],
        dim=1,
    )


def render_people(
    identities: Identities,
    cameras: Cameras,
    shots: Shots,
    height: int,
    width: int,
    generator: torch.Generator,
) -> torch.Tensor:
    """Render one image per row: identity ``identities[i]`` seen by camera ``cameras[i]``.

    All three bundles hold ``B`` rows (already selected per image). Returns float32
    ``(B, 3, height, width)`` in [0, 1], before the camera's photometric chain.
    """
    count = shots.view.numel()
    background = render_background(cameras, shots, height, width, generator)
    rows, cols = _image_axes(height, width)
    person_height = _column(cameras.person_height + shots.height_jitter)
    # a: 0 at the top of the head, 1 at the soles, (B, H, 1); b: sideways, (B, 1, W); both in
    # units of the person's height.
    a = (rows - _column(cameras.person_top + shots.top_jitter)) / person_height
    b = (cols - _column(shots.centre)) / person_height
    b_abs = b.abs()
    labels = torch.zeros((count, height, width), dtype=torch.uint8)

    view = _column(shots.view)
    side_view = view >= LEFT
    facing = torch.where(view == RIGHT, 1.0, -1.0)  # +1: walks towards the right of the image
    narrowing = torch.where(side_view, 0.62, 1.0)
    head_radius = _column(identities.head_radius)
    shoulder_top = 2.0 * head_radius + 0.025
    hip = _column(identities.hip_height)
    shoulder_hw = _column(identities.shoulder_half_width) * narrowing
    hip_hw = _column(identities.hip_half_width) * narrowing
    leg_hw = _column(identities.leg_half_width)
    arm_hw = _column(identities.arm_half_width)
    stride = _column(shots.stride)

    # Legs: apart in front/back views, scissoring in side views; shoes at the soles.
    leg_depth = (a - hip).clamp(min=0.0)
    leg_offset = torch.where(side_view, 0.3 * stride * leg_depth, hip_hw * 0.55 + 0.02 * stride * leg_depth)
    leg_rows = (a >= hip - 0.01) & (a <= 1.0)
    legs = leg_rows & (((b - leg_offset).abs() < leg_hw) | ((b + leg_offset).abs() < leg_hw))
    bottom_kind = _column(identities.bottom_kind)
    knee = hip + 0.5 * (1.0 - hip)
    bare_rows = ((bottom_kind == 1) & (a > knee - 0.04)) | ((bottom_kind == 2) & (a > hip + 0.16))
    labels.masked_fill_(legs, BOTTOM)
    labels.masked_fill_(legs & bare_rows, SKIN)
    toe = torch.where(side_view, facing * 0.045, torch.zeros_like(facing))
    shoe_hw = leg_hw + toe.abs() / 2
    shoes = ((a > 0.955) & (a <= 1.0)) & (
        ((b - leg_offset - toe / 2).abs() < shoe_hw) | ((b + leg_offset - toe / 2).abs() < shoe_hw)
    )
    labels.masked_fill_(shoes, SHOE)
    skirt_rows = (bottom_kind == 2) & (a >= hip - 0.01) & (a < hip + 0.2)
    skirt = skirt_rows & (b_abs < hip_hw * (1.0 + 3.0 * (a - hip).clamp(0.0, 0.2)))
    labels.masked_fill_(skirt, BOTTOM)

    # Torso: a trapezoid from the shoulders to the hips, carrying the top's pattern.
    torso_fraction = ((a - shoulder_top) / (hip - shoulder_top)).clamp(0.0, 1.0)
    torso_hw = shoulder_hw + (hip_hw - shoulder_hw) * torso_fraction
    torso = (a >= shoulder_top) & (a < hip + 0.01) & (b_abs < torso_hw)
    period = _column(identities.stripe_period)
    pattern = _column(identities.top_pattern)
    across = torch.remainder((a - shoulder_top) / period, 1.0) < 0.5  # (B, H, 1)
    along = torch.remainder(b / period + 0.25, 1.0) < 0.5  # (B, 1, W)
    second = (
        ((pattern == 1) & across)
        | ((pattern == 2) & along)
        | ((pattern == 3) & (across ^ along))
        | ((pattern == 4) & (torso_fraction > 0.5))
    )
    labels.masked_fill_(torso, TOP)
    labels.masked_fill_(torso & second, TOP_SECOND)

    # Arms: at the sides in front/back views; one arm swinging over the body in side views.
    arm_length = 0.37
    arm_rows = (a >= shoulder_top) & (a < shoulder_top + arm_length)
    arm_depth = (a - shoulder_top).clamp(min=0.0)
    hanging = shoulder_hw + arm_hw * 0.8 + 0.05 * arm_depth
    swing = 0.45 * _column(shots.arm_swing) * arm_depth
    arm_centre_distance = torch.where(side_view, (b - swing).abs(), (b_abs - hanging).abs())
    arms = arm_rows & (arm_centre_distance < arm_hw)
    sleeves_end = torch.where(_column(identities.short_sleeves), shoulder_top + 0.12, shoulder_top + arm_length - 0.045)
    labels.masked_fill_(arms, SKIN)
    labels.masked_fill_(arms & (a < sleeves_end), TOP)
    labels.masked_fill_(arms & (a > shoulder_top + arm_length - 0.045), HAND)

    # Head, neck and hair. From behind the head is all hair; from the side, its back half.
    neck = (a >= 2.0 * head_radius - 0.01) & (a < shoulder_top + 0.005) & (b_abs < head_radius * 0.45)
    head = ((a - head_radius) / head_radius) ** 2 + (b / (head_radius * 0.82)) ** 2 <= 1.0
    labels.masked_fill_(neck | head, SKIN)
    behind = b * facing < 0.0  # (B, 1, W): the back half of a side view
    hair_back = (view == BACK) | (side_view & behind)
    fall_rows = _column(identities.long_hair) & (a >= head_radius) & (a < shoulder_top + 0.1)
    fall_cols = torch.where(
        view == FRONT,
        (b_abs - head_radius * 0.85).abs() < 0.02,
        torch.where(view == BACK, b_abs < head_radius * 0.9, behind & (b_abs < head_radius)),
    )
    hair = (head & ((a < head_radius * 0.8) | hair_back)) | (fall_rows & fall_cols)
    labels.masked_fill_(hair, HAIR)
    brim = (a > head_radius * 0.55) & (a < head_radius * 0.75) & (b_abs < head_radius * 1.15)
    hat = _column(identities.has_hat) & ((head & (a < head_radius * 0.7)) | brim)
    labels.masked_fill_(hat, HAT)

    # Accessories: a backpack shows from behind and sticks out sideways; from the front only its
    # straps. The shoulder bag swaps sides from behind. The logo shows only from the front.
    pack_rows = _column(identities.has_backpack) & (a >= shoulder_top + 0.02) & (a < shoulder_top + 0.27)
    behind_shoulder = -b * facing - shoulder_hw
    pack = pack_rows & (
        ((view == BACK) & (b_abs < shoulder_hw * 0.8))
        | (side_view & (behind_shoulder > -0.01) & (behind_shoulder < 0.07))
    )
    strap_rows = _column(identities.has_backpack) & (view == FRONT) & (a >= shoulder_top) & (a < shoulder_top + 0.2)
    straps = strap_rows & ((b_abs - shoulder_hw * 0.55).abs() < 0.013)
    labels.masked_fill_(pack | straps, BACKPACK)
    bag_side = _column(identities.bag_side) * torch.where(view == BACK, -1.0, 1.0)
    bag_offset = b * bag_side - hip_hw
    bag_rows = _column(identities.has_bag) & (a >= hip - 0.06) & (a < hip + 0.09)
    bag = bag_rows & (bag_offset > -0.01) & (bag_offset < 0.075)
    strap_line = (a - shoulder_top) - 0.85 * (b * bag_side + shoulder_hw)
    bag_strap = _column(identities.has_bag) & ~side_view & torso & (strap_line.abs() < 0.015)
    labels.masked_fill_(bag | bag_strap, BAG)
    logo_rows = _column(identities.has_logo) & (view == FRONT) & (a >= shoulder_top + 0.07) & (a < shoulder_top + 0.13)
    labels.masked_fill_(logo_rows & ((b - 0.35 * shoulder_hw).abs() < 0.035), LOGO)

    # Occluders: a pole in front of the person, or something low across the bottom of the frame.
    x = (cols + cols.abs().max()) / (2 * cols.abs().max())  # (1, 1, W) in [0, 1]
    occluder = _column(shots.occluder)
    pole = (occluder == 1) & ((x - _column(shots.occluder_position)).abs() < _column(shots.occluder_width))
    low = (occluder == 2) & (rows > 0.8 - 0.2 * _column(shots.occluder_position))
    labels.masked_fill_(pole | low, OCCLUDER)

    # Shading: round bodies darken towards their edges, and the camera's light comes from one side.
    relief = 1.0 - 0.35 * (b / (shoulder_hw + 0.06)).clamp(-1.0, 1.0) ** 2
    light = (relief * (1.0 + _column(cameras.light_slope) * b) * _column(shots.light_jitter)).clamp(0.2, 1.6)
    light = torch.where(labels == OCCLUDER, 1.0, light)
    person = _lookup(_person_palette(identities, cameras), labels) * light[:, None]
    return torch.where((labels != BACKGROUND)[:, None], person, background).clamp(0.0, 1.0)


def apply_camera(images: torch.Tensor, cameras: Cameras, generator: torch.Generator) -> torch.Tensor:
    """The camera's photometric and optical chain on ``(B, 3, H, W)`` float in [0, 1].

    ``cameras`` holds one row per image. Returns uint8 ``(B, 3, H, W)``.
    """
    # White balance and exposure, then contrast c (around the image mean m) and saturation s
    # (around the pixel's grey g), folded into one linear map: c*s*x + c*(1-s)*g + (1-c)*m.
    images = images * _colour(cameras.colour_cast * cameras.gain[:, None])
    contrast = cameras.contrast[:, None, None, None]
    saturation = cameras.saturation[:, None, None, None]
    image_mean = images.mean(dim=(1, 2, 3), keepdim=True)
    grey = images.mean(dim=1, keepdim=True)
    images = torch.addcmul((1.0 - contrast) * image_mean + contrast * (1.0 - saturation) * grey,
                           images, contrast * saturation)

    # Optics: cheap sensors see fewer pixels and a softer image; then sensor noise (luminance).
    # Resolution loss and blur are defined at 128 pixels of height and scale with the image, so
    # a camera looks the same at any size.
    size = images.shape[-2] / REFERENCE_HEIGHT
    images = _lower_resolution(images, torch.clamp(torch.round(cameras.downscale * size), min=1).long())
    images = _gaussian_blur(images, cameras.blur_sigma * size)
    count, _, height, width = images.shape
    noise = torch.randn((count, 1, height, width), generator=generator)
    images = torch.addcmul(images, noise, cameras.noise_std[:, None, None, None])
    # The sensor's response curve comes last, as in a camera's processing chain.
    images = images.clamp_(0.0, 1.0).pow_(cameras.gamma[:, None, None, None])
    return images.mul_(255.0).round_().to(torch.uint8)


def _lower_resolution(images: torch.Tensor, downscale: torch.Tensor) -> torch.Tensor:
    """Average-pool by the integer factor ``downscale`` (B,) and scale back up bilinearly; images
    sharing a factor go through together."""
    height, width = images.shape[-2:]
    out = images
    for factor in torch.unique(downscale).tolist():
        factor = int(factor)
        if factor <= 1:
            continue
        rows = torch.nonzero(downscale == factor).squeeze(1)
        small = F.avg_pool2d(images[rows], kernel_size=factor, stride=factor, ceil_mode=True)
        if out is images:
            out = images.clone()
        out[rows] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)
    return out


def _gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-image ``sigma`` (B,), in pixels; one conv for the batch."""
    if float(sigma.max()) < 0.2:
        return images
    radius = max(1, math.ceil(2.5 * float(sigma.max())))
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernels = torch.exp(-0.5 * (offsets[None, :] / sigma.clamp(min=1e-3)[:, None]) ** 2)
    kernels = kernels / kernels.sum(dim=1, keepdim=True)  # (B, 2r+1); sigma ~0 gives a delta
    count, channels, height, width = images.shape
    # Grouped convolution: each (image, channel) plane gets its image's kernel.
    planes = images.reshape(1, count * channels, height, width)
    weights = kernels.repeat_interleave(channels, dim=0)
    planes = F.pad(planes, (radius, radius, radius, radius), mode="replicate")
    planes = F.conv2d(planes, weights[:, None, None, :], groups=count * channels)
    planes = F.conv2d(planes, weights[:, None, :, None], groups=count * channels)
    return planes.reshape(count, channels, height, width)

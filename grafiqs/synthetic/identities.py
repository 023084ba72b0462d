"""Identity and nuisance parameters drawn from seeds.

* each identity is a deterministic draw of many continuous parameters (face shape, skin
  tone, eye/brow/nose/mouth geometry and colour, hair style and colour, beard, glasses,
  moles), so a small CNN has something to learn and identities are clearly distinct;
* each sample adds nuisance (roll, yaw/pitch-like feature shifts, expression,
  illumination, background, sensor noise), so there is within-identity variation;
* the "wide" world (`world="wide"`) draws the same people under a harder nuisance: wider
  pose, stronger expression and harsher light, ageing of the person between photos, and
  per-photo sunglasses and caps, a world in which recognition has more to learn.

Parameters are in canonical 112x112 pixel coordinates (x right, y down), a pure function of
(seed, identity) or (seed, identity, sample).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from grafiqs.synthetic.seeds import _TAG_IDENTITY, _TAG_NUISANCE, _TAG_WIDE, _check_key, _rng

WORLDS = ("standard", "wide")  # nuisance distributions of sample_nuisance
HAIR_STYLES = ("bald", "buzz", "short", "fringe", "long", "curly")
_HAIR_STYLE_P = (0.08, 0.14, 0.28, 0.16, 0.22, 0.12)


@dataclass(frozen=True)
class IdentityParams:
    """Everything that stays fixed for one synthetic person (canonical 112x112 coordinates)."""

    face_a: float  # half width of the face at cheek level
    face_b_top: float  # half height above the face centre (skull)
    face_b_bot: float  # half height below the face centre (chin)
    face_cy: float  # y of the face centre
    jaw: float  # width of the jaw relative to the cheeks (0.5 narrow chin .. 1 square)
    chin_power: float  # how low the jaw narrowing starts
    skin: tuple  # BGR albedo of the skin
    skin_texture: float  # amplitude of pores / blotches
    eye_dx: float  # half distance between the eye centres
    eye_y: float
    eye_w: float  # half width of an eye
    eye_h: float  # half height of an open eye
    eye_tilt: float  # degrees, positive lifts the outer corners
    iris: tuple  # BGR
    iris_r: float
    brow_thickness: float
    brow_angle: float  # slope, positive lifts the outer ends
    brow_arch: float
    brow_gap: float  # distance brow centre line - eye centre
    brow_len: float
    brow_density: float  # 0 sparse (skin shows through) .. 1 dense
    nose_y: float  # y of the nose tip
    nose_w: float  # half width of the nostril wings
    nose_bridge: float  # half width of the nose bridge shadows
    mouth_y: float
    mouth_w: float  # half width of the mouth
    lip_top: float
    lip_bot: float
    lip: tuple  # BGR
    hair_style: str
    hair: tuple  # BGR
    hair_volume: float
    hairline: float  # y of the top of the forehead
    hair_recede: float  # M-shaped temple recession
    hair_length: float  # y where long hair ends
    fringe_y: float  # y of the bottom of a fringe
    fringe_tilt: float
    fringe_jag: tuple  # small fixed zigzag of the fringe edge
    curl_phase: float
    ear_size: float
    beard: int  # 0 none, 1 stubble, 2 full
    moustache: bool
    glasses: int  # 0 none, 1 round, 2 rectangular
    glasses_color: tuple
    moles: tuple  # ((x, y, r), ...)
    neck_w: float


@dataclass(frozen=True)
class NuisanceParams:
    """What changes from one image of a person to the next."""

    roll: float  # degrees, in-plane rotation of the head layer
    yaw: float  # -1..1 scale; features shift horizontally, the far eye squashes
    pitch: float  # features shift vertically
    scale: float
    tx: float
    ty: float
    mouth_open: float  # 0..1
    smile: float  # -0.4 (frown) .. 1
    eye_open: float  # 0 (closed) .. 1.1
    brow_raise: float  # pixels
    gaze_x: float
    gaze_y: float
    light_az: float  # radians, direction the light comes from in the image plane
    light_elev: float  # radians above the image plane
    ambient: float
    diffuse: float
    exposure: float
    light_gradient: float  # strength of a global illumination ramp
    color_temp: float  # -1 cool .. 1 warm
    clothing: tuple  # BGR
    blur: float  # sigma of a mild optical blur
    sensor_noise: float  # std in grey levels
    seed: int  # background, texture offsets and sensor noise
    # the wide world only (the defaults draw nothing):
    age: float = 0.0  # -1 younger .. 1 older than the identity's own parameters
    sunglasses: bool = False
    cap: tuple | None = None  # BGR colour of a cap over the hairline, None for no cap


_SKIN_STOPS = np.array([[50, 70, 108], [78, 112, 162], [118, 156, 208], [160, 188, 232]], np.float64)
_HAIR_COLORS = np.array(
    [[22, 22, 26], [28, 42, 66], [40, 64, 104], [70, 104, 150], [112, 168, 212], [34, 58, 135], [140, 140, 142], [200, 202, 206]],
    np.float64,
)
_HAIR_P = np.array([0.24, 0.22, 0.16, 0.1, 0.1, 0.06, 0.07, 0.05])
_IRIS_COLORS = np.array([[18, 30, 52], [28, 55, 95], [45, 95, 115], [65, 115, 80], [150, 115, 70], [125, 120, 112]], np.float64)
_IRIS_P = np.array([0.3, 0.25, 0.12, 0.1, 0.13, 0.1])


def _color(c: np.ndarray) -> tuple:
    return tuple(float(v) for v in np.clip(c, 0, 255))


def sample_identity(seed: int, identity: int) -> IdentityParams:
    """Deterministic identity parameters for (seed, identity); disjoint indices give unrelated people."""
    _check_key(seed=seed, identity=identity)
    r = _rng(_TAG_IDENTITY, seed, identity)
    u = r.uniform
    t = u(0, 1) * 3
    k = min(int(t), 2)
    skin = _SKIN_STOPS[k] + (t - k) * (_SKIN_STOPS[k + 1] - _SKIN_STOPS[k])
    skin = skin * u(0.93, 1.07) + r.normal(0, 2.5, 3) + np.array([-u(0, 10), 0, u(0, 12)])  # warm, never greenish
    hair = _HAIR_COLORS[r.choice(len(_HAIR_COLORS), p=_HAIR_P)] * u(0.8, 1.2) + r.normal(0, 5, 3)
    iris = _IRIS_COLORS[r.choice(len(_IRIS_COLORS), p=_IRIS_P)] * u(0.8, 1.2) + r.normal(0, 6, 3)
    lip = skin * u(0.62, 0.85) * (1 - u(0.2, 0.5)) + np.array([70, 70, 160]) * u(0.2, 0.5)
    style = HAIR_STYLES[r.choice(len(HAIR_STYLES), p=_HAIR_STYLE_P)]
    eye_y = u(48.5, 54.0)
    brow_gap = u(6.0, 10.0)
    face_a = u(31.0, 38.0)
    beard = int(r.choice(3, p=(0.62, 0.2, 0.18)))
    moles = tuple(
        (float(56 + u(-0.7, 0.7) * face_a), float(u(40, 100)), float(u(0.6, 1.3))) for _ in range(int(r.choice(4, p=(0.4, 0.3, 0.2, 0.1))))
    )
    return IdentityParams(
        face_a=face_a,
        face_b_top=u(45.0, 52.0),
        face_b_bot=u(44.0, 50.0),
        face_cy=u(58.5, 62.5),
        jaw=u(0.5, 0.95),
        chin_power=u(1.2, 2.6),
        skin=_color(skin),
        skin_texture=u(0.012, 0.035),
        eye_dx=u(15.5, 19.5),
        eye_y=eye_y,
        eye_w=u(5.6, 7.6),
        eye_h=u(2.3, 3.9),
        eye_tilt=u(-9, 9),
        iris=_color(iris),
        iris_r=u(2.7, 3.5),
        brow_thickness=u(1.2, 3.6),
        brow_angle=u(-0.25, 0.25),
        brow_arch=u(0.0, 3.0),
        brow_gap=brow_gap,
        brow_len=u(12.0, 18.0),
        brow_density=u(0.45, 1.0),
        nose_y=u(67.0, 76.0),
        nose_w=u(5.5, 10.0),
        nose_bridge=u(3.0, 5.5),
        mouth_y=u(88.0, 96.0),
        mouth_w=u(11.0, 17.0),
        lip_top=u(1.4, 3.8),
        lip_bot=u(2.0, 5.2),
        lip=_color(lip),
        hair_style=style,
        hair=_color(hair),
        hair_volume=u(2.0, 9.0),
        hairline=u(13.0, 26.0),
        hair_recede=u(0.0, 8.0) if r.uniform() < 0.35 else 0.0,
        hair_length=u(100.0, 140.0),
        fringe_y=eye_y - brow_gap - u(3.0, 8.0),
        fringe_tilt=u(-5, 5),
        fringe_jag=tuple(float(v) for v in r.uniform(-1.6, 1.6, 9)),
        curl_phase=u(0, 2 * math.pi),
        ear_size=u(0.8, 1.2),
        beard=beard,
        moustache=bool(beard > 0 or r.uniform() < 0.1),
        glasses=int(r.choice(3, p=(0.84, 0.08, 0.08))),
        glasses_color=_color(r.choice([np.array([20.0, 20, 20]), np.array([160.0, 160, 165]), np.array([30.0, 50, 90])]) * u(0.8, 1.2)),
        moles=moles,
        neck_w=u(0.48, 0.62) * face_a,
    )


def check_world(world: str) -> None:
    if world not in WORLDS:
        raise ValueError(f"unknown world {world!r}; choose from {', '.join(WORLDS)}")


def sample_nuisance(seed: int, identity: int, sample: int, world: str = "standard") -> NuisanceParams:
    """Deterministic per-image nuisance for (seed, identity, sample) in `world` (one of WORLDS)."""
    _check_key(seed=seed, identity=identity, sample=sample)
    check_world(world)
    r = _rng(_TAG_NUISANCE, seed, identity, sample)
    v = iter(r.random(32).tolist())  # one call: scalar Generator calls cost microseconds each

    def u(lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * next(v)

    roll = float(np.clip(r.standard_normal() * 4.0, -10, 10))
    az = u(-math.pi, 0) if u() < 0.85 else u(-math.pi, math.pi)  # mostly from above
    blink = u() < 0.05
    standard = NuisanceParams(
        roll=roll,
        yaw=u(-0.35, 0.35),
        pitch=u(-0.2, 0.2),
        scale=u(0.96, 1.04),
        tx=u(-2.0, 2.0),
        ty=u(-2.0, 2.0),
        mouth_open=u() ** 2.5,
        smile=u(-0.4, 1.0),
        eye_open=u(0.05, 0.25) if blink else u(0.6, 1.1),
        brow_raise=u(-1.0, 2.5),
        gaze_x=u(-1, 1),
        gaze_y=u(-0.5, 0.5),
        light_az=az,
        light_elev=u(0.35, 1.2),
        ambient=u(0.35, 0.65),
        diffuse=u(0.3, 0.75),
        exposure=u(0.95, 1.35),
        light_gradient=u(0.0, 0.35),
        color_temp=u(-1, 1),
        clothing=_color(np.array([u(0, 255), u(0, 255), u(0, 255)]) * u(0.3, 1.0)),
        blur=u(0.25, 0.6),
        sensor_noise=u(1.0, 3.0),
        seed=int(r.integers(0, 2**62)),
    )
    return standard if world == "standard" else _widen(standard, seed, identity, sample)


def _widen(standard: NuisanceParams, seed: int, identity: int, sample: int) -> NuisanceParams:
    """The wide world's nuisance: the standard draw's background, gaze and sensor, the rest harder.

    From its own random stream, so the standard world's images stay what they were.
    """
    r = _rng(_TAG_WIDE, seed, identity, sample)
    v = iter(r.random(24).tolist())

    def u(lo: float = 0.0, hi: float = 1.0) -> float:
        return lo + (hi - lo) * next(v)

    return replace(
        standard,
        roll=float(np.clip(r.standard_normal() * 7.0, -20, 20)),
        yaw=u(-0.8, 0.8),
        pitch=u(-0.45, 0.45),
        scale=u(0.92, 1.08),
        tx=u(-3.5, 3.5),
        ty=u(-3.5, 3.5),
        mouth_open=u() ** 1.5,
        smile=u(-0.6, 1.4),
        brow_raise=u(-1.5, 4.0),
        light_elev=u(0.15, 1.2),
        ambient=u(0.15, 0.65),
        diffuse=u(0.3, 1.0),
        exposure=u(0.75, 1.5),
        light_gradient=u(0.0, 0.6),
        age=u(-1.0, 1.0),
        sunglasses=u() < 0.08,
        cap=_color(np.array([u(0, 255), u(0, 255), u(0, 255)]) * u(0.3, 1.0)) if u() < 0.1 else None,
    )


def neutral_nuisance(seed: int = 0) -> NuisanceParams:
    """Frontal, neutral, evenly lit nuisance: for comparing identities under identical conditions."""
    return NuisanceParams(
        roll=0.0, yaw=0.0, pitch=0.0, scale=1.0, tx=0.0, ty=0.0, mouth_open=0.0, smile=0.2, eye_open=1.0,
        brow_raise=0.0, gaze_x=0.0, gaze_y=0.0, light_az=-math.pi / 2, light_elev=1.0, ambient=0.5, diffuse=0.55,
        exposure=1.0, light_gradient=0.0, color_temp=0.0, clothing=(90.0, 90.0, 90.0), blur=0.4, sensor_noise=2.0,
        seed=int(seed),
    )

"""The renderer: one 112x112 BGR face image from identity and nuisance parameters, drawn with cv2 + numpy.

Faces carry texture (ellipsoid shading, soft feature shadows, skin pores, hair strands,
textured backgrounds, sensor noise) because on flat cartoon images blur or JPEG would
barely change the BatchNorm statistics GraFIQs relies on.

Faces are roughly aligned like insightface 112x112 crops: eye centres near (38, 51) and
(73, 51), nose tip near (56, 71), mouth corners near (41, 92) and (71, 92) (pixel
coordinates, x right, y down).

Drawing happens at 2x resolution (antialiasing by area downsampling), the head layer is
rotated with one warpAffine, and all noise comes from a fixed, lazily built texture
bank cropped at random offsets, which keeps one image at a few milliseconds on one core.
"""
from __future__ import annotations

import functools
import math
from dataclasses import replace

import cv2
import numpy as np

from grafiqs.synthetic.identities import (
    IdentityParams,
    NuisanceParams,
    sample_identity,
    sample_nuisance,
)

IMAGE_SIZE = 112
_S = 2  # supersampling factor of the head layer
_R = IMAGE_SIZE * _S
_SHIFT = 4  # cv2 fractional bits for sub-pixel drawing
_LINE = cv2.LINE_AA

# Canonical insightface 112x112 landmarks (x, y): left eye, right eye, nose tip, mouth corners.
ARCFACE_LANDMARKS = np.array(
    [[38.29, 51.70], [73.53, 51.50], [56.03, 71.74], [41.55, 92.37], [70.73, 92.20]], dtype=np.float32
)

# ----------------------------------------------------------------------------------------
# texture bank


@functools.lru_cache(maxsize=1)
def _bank() -> dict:
    """Fixed noise textures at 1x, built once per process from a constant seed (identical everywhere).

    Per-image randomness only picks crop offsets, which is far cheaper than drawing fresh noise.
    Skin/hair textures come pre-scaled so that aux (0..255) * texture is the relative modulation.
    """
    r = np.random.default_rng(0x5EED)
    n = 2 * IMAGE_SIZE + 64

    def norm(x: np.ndarray) -> np.ndarray:
        x = x - x.mean()
        return (x / x.std()).astype(np.float32)

    def white() -> np.ndarray:
        return r.standard_normal((n, n)).astype(np.float32)

    w = white()
    skin = norm(norm(cv2.GaussianBlur(w, (0, 0), 0.55)) + 0.45 * norm(cv2.GaussianBlur(white(), (0, 0), 2.5)))
    w = white()
    streak = norm(norm(cv2.GaussianBlur(w, (0, 0), sigmaX=0.45, sigmaY=4.0)) + 0.5 * norm(cv2.GaussianBlur(white(), (0, 0), 1.2, sigmaY=7.0)))
    w = white()
    grain = norm(cv2.GaussianBlur(w, (0, 0), 0.5) - 0.5 * cv2.GaussianBlur(w, (0, 0), 1.2))
    octaves = []
    for res in (3, 6, 12, 24, 48, 96):  # fractal "clouds" for backgrounds, 3 channels, mostly luminance
        g = r.standard_normal((res * n // IMAGE_SIZE, res * n // IMAGE_SIZE, 3)).astype(np.float32)
        g = 0.4 * g + 0.6 * g.mean(axis=2, keepdims=True)
        octaves.append(cv2.resize(g, (n, n), interpolation=cv2.INTER_CUBIC))
    coarse = sum(o * 0.6**i for i, o in enumerate(octaves[:3]))
    fine = sum(o * 0.6**i for i, o in enumerate(octaves[3:]))
    return {
        "skin": skin * np.float32(0.25 / 255),
        "streak": streak * np.float32(0.6 / 255),
        "grain": grain * np.float32(0.6 / 255),
        "coarse": coarse / coarse.std(),
        "fine": fine / fine.std(),
        "sensor": r.standard_normal((IMAGE_SIZE + 64, IMAGE_SIZE + 64, 3)).astype(np.float32),
    }


def _crop(tex: np.ndarray, size: int, r: np.random.Generator, flips: bool = False) -> np.ndarray:
    y, x = r.integers(0, tex.shape[0] - size + 1), r.integers(0, tex.shape[1] - size + 1)
    out = tex[y : y + size, x : x + size]
    if flips:
        f = r.integers(0, 8)
        out = out[:: 1 - 2 * (f & 1), :: 1 - (f & 2)]
        if f & 4:
            out = out.swapaxes(0, 1)
    return out


# ----------------------------------------------------------------------------------------
# drawing helpers (coordinates in canonical 112-pixel units)

_MUL = _S * (1 << _SHIFT)


def _p(points) -> np.ndarray:
    return np.rint(np.asarray(points, np.float64) * _MUL).astype(np.int32).reshape(-1, 1, 2)


def _arc(cx: float, cy: float, ax: float, ay: float, t0: float, t1: float, n: int = 16) -> np.ndarray:
    t = np.linspace(t0, t1, n)
    return np.stack([cx + ax * np.cos(t), cy + ay * np.sin(t)], 1)


class _Canvas:
    """Head layer at 2x: BGR albedo, aux (alpha, skin-texture amount, hair-texture amount), soft shadows at 1x."""

    def __init__(self) -> None:
        self.albedo = np.zeros((_R, _R, 3), np.uint8)
        self.aux = np.zeros((_R, _R, 3), np.uint8)
        self.shadow = np.zeros((IMAGE_SIZE, IMAGE_SIZE), np.float32)

    def poly(self, pts, color, aux) -> None:
        p = [_p(pts)]
        cv2.fillPoly(self.albedo, p, color, _LINE, _SHIFT)
        cv2.fillPoly(self.aux, p, aux, _LINE, _SHIFT)

    def ellipse(self, c, axes, angle, color, aux, thickness: float = -1) -> None:
        th = -1 if thickness < 0 else max(1, int(round(thickness * _S)))
        center = tuple(int(round(v * _MUL)) for v in c)
        ax = tuple(max(0, int(round(v * _MUL))) for v in axes)
        cv2.ellipse(self.albedo, center, ax, angle, 0, 360, color, th, _LINE, _SHIFT)
        cv2.ellipse(self.aux, center, ax, angle, 0, 360, aux, th, _LINE, _SHIFT)

    def line(self, pts, color, aux, thickness: float) -> None:
        th = max(1, int(round(thickness * _S)))
        p = [_p(pts)]
        cv2.polylines(self.albedo, p, False, color, th, _LINE, _SHIFT)
        cv2.polylines(self.aux, p, False, aux, th, _LINE, _SHIFT)

    # soft shading at 1x: positive darkens, negative brightens; blurred later
    def shade_poly(self, pts, value: float) -> None:
        cv2.fillPoly(self.shadow, [np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)], float(value), cv2.LINE_8, 4)

    def shade_ellipse(self, c, axes, value: float, angle: float = 0.0) -> None:
        cv2.ellipse(
            self.shadow, (int(c[0] * 16), int(c[1] * 16)), (max(0, int(axes[0] * 16)), max(0, int(axes[1] * 16))),
            angle, 0, 360, float(value), -1, cv2.LINE_8, 4,
        )

    def shade_line(self, pts, value: float, thickness: float) -> None:
        p = [np.round(np.asarray(pts) * 16).astype(np.int32).reshape(-1, 1, 2)]
        cv2.polylines(self.shadow, p, False, float(value), max(1, int(round(thickness))), cv2.LINE_8, 4)


def _mix(a, b, t: float) -> tuple:
    return tuple(float(x + (y - x) * t) for x, y in zip(a, b))


def _scale(c, k: float) -> tuple:
    return tuple(float(min(255.0, v * k)) for v in c)


def _aux(skin: float = 0.0, hair: float = 0.0) -> tuple:
    """aux colour: full coverage plus texture amounts (skin amplitude up to 0.25, hair up to 0.6)."""
    return (255.0, min(skin / 0.25, 1.0) * 255.0, min(hair / 0.6, 1.0) * 255.0)


# ----------------------------------------------------------------------------------------
# the face


def _background(r: np.random.Generator, bank: dict) -> np.ndarray:
    """112x112x3 float background: colour ramp, multi-scale noise, blurred shapes (depth of field).

    Built at half resolution (it is mostly out of focus) plus a full-resolution fine-noise layer.
    """
    h = IMAGE_SIZE // 2
    v = r.random(16)
    base = 25 + 200 * v[0] + r.standard_normal(3) * (45 * v[1])  # mostly muted colours
    c1 = base + r.normal(0, 20, 3)
    c2 = base * (0.5 + 0.7 * v[2]) + r.normal(0, 20, 3)
    ang = 2 * math.pi * v[3]
    ramp = (math.cos(ang) / IMAGE_SIZE) * _GRID_X[::2, ::2] + (math.sin(ang) / IMAGE_SIZE) * _GRID_Y[::2, ::2] + 0.5
    bg = c1.astype(np.float32) + (c2 - c1).astype(np.float32) * ramp[..., None]
    bg += _crop(bank["coarse"], h, r, True) * np.float32(4 + 26 * v[4])
    count = int(v[5] * 8)
    if count:
        shapes = r.random((count, 8))
        colors = np.clip(base * (0.4 + 1.2 * shapes[:, 6:7]) + r.normal(0, 30, (count, 3)), 0, 255)
        for (kind, x, y, w, hh, _, _, _), col in zip(shapes, colors.tolist()):
            if kind < 0.4:
                x0, y0 = int(x * (h + 10)) - 10, int(y * (h + 10)) - 10
                cv2.rectangle(bg, (x0, y0), (x0 + 4 + int(w * 26), y0 + 4 + int(hh * 26)), col, -1)
            elif kind < 0.75:
                cv2.circle(bg, (int(x * h), int(y * h)), 2 + int(w * 10), col, -1)
            else:
                cv2.line(bg, (int(x * h), -5), (int(w * h), h + 5), col, 1 + int(hh * 2))
    bg = cv2.GaussianBlur(bg, (0, 0), 0.3 + 1.2 * v[6])
    bg = cv2.resize(bg, (IMAGE_SIZE, IMAGE_SIZE), interpolation=cv2.INTER_LINEAR)
    bg += _crop(bank["fine"], IMAGE_SIZE, r, True) * np.float32(7 * v[7] ** 2)
    return bg


_GRID_Y, _GRID_X = np.mgrid[0:IMAGE_SIZE, 0:IMAGE_SIZE].astype(np.float32) - (IMAGE_SIZE - 1) / 2
# constant sample positions along curves (precomputed: np.linspace costs microseconds per call)
_OUTLINE_T = np.linspace(0, 2 * math.pi, 56, endpoint=False)
_CLOUD_T = np.linspace(0, 2 * math.pi, 48, endpoint=False)
_HAIRLINE_T = np.linspace(0, -math.pi, 19)
_U9, _U13, _U15 = np.linspace(-1, 1, 9), np.linspace(-1, 1, 13), np.linspace(-1, 1, 15)


_GREY_HAIR = (150.0, 150.0, 152.0)


def _aged(ip: IdentityParams, age: float) -> IdentityParams:
    """The person `age` (-1 .. 1) younger or older: weight, greying and receding hair, drier skin, heavier lids."""
    old = max(age, 0.0)
    return replace(
        ip,
        face_a=ip.face_a * (1 + 0.04 * age),
        jaw=min(0.98, ip.jaw + 0.06 * age),
        hair=_mix(ip.hair, _GREY_HAIR, 0.75 * old**1.5),
        hairline=ip.hairline + 5.0 * old,
        hair_recede=ip.hair_recede + 5.0 * old,
        skin_texture=ip.skin_texture * (1 + 0.7 * old),
        brow_density=ip.brow_density * (1 - 0.25 * old),
        eye_h=ip.eye_h * (1 - 0.12 * old),
    )


def draw_face(identity_params: IdentityParams, nuisance_params: NuisanceParams) -> np.ndarray:
    """Render one 112x112 BGR uint8 face image of `identity_params` under `nuisance_params`."""
    ip, nu = identity_params, nuisance_params
    if nu.age:
        ip = _aged(ip, nu.age)
    r = np.random.default_rng(nu.seed)
    bank = _bank()
    cv = _Canvas()
    yaw, pitch = nu.yaw, nu.pitch
    a, bt, bb, cy = ip.face_a, ip.face_b_top, ip.face_b_bot, ip.face_cy
    fcx = 56.0 + yaw * 1.5
    squash = 1 - 0.08 * abs(yaw)

    def feat(x: float, y: float, depth: float) -> tuple[float, float]:
        return 56.0 + (x - 56.0) * (1 - 0.12 * abs(yaw)) + yaw * depth * 14.0, y + pitch * depth * 10.0

    skin = ip.skin
    skin_aux = _aux(skin=ip.skin_texture)
    grainy = ip.hair_style in ("buzz", "short", "curly")
    hair_aux = _aux(hair=0.16 if grainy else 0.4, skin=0.04)
    hair_col = ip.hair
    lx = math.cos(nu.light_az) * math.cos(nu.light_elev)
    ly = math.sin(nu.light_az) * math.cos(nu.light_elev)
    lz = math.sin(nu.light_elev)
    shadow_side = -1.0 if lx > 0 else 1.0  # side of the nose that is in shadow
    side_strength = min(1.0, abs(lx) * 1.5) * nu.diffuse

    # face outline (upper half ellipse, jaw narrowing below)
    ux, uy = np.cos(_OUTLINE_T), np.sin(_OUTLINE_T)
    lower = uy > 0
    wfac = np.where(lower, 1 - (1 - ip.jaw) * np.abs(uy) ** ip.chin_power, 1.0)
    ox = fcx + a * ux * wfac * squash * (1 - 0.12 * yaw * np.sign(ux))
    oy = cy + np.where(lower, bb, bt) * uy
    outline = np.stack([ox, oy], 1)

    # --- back hair
    style = ip.hair_style
    vol = ip.hair_volume
    if style == "long":
        flare = vol * 0.8
        top = _arc(fcx, cy, a + vol, bt + vol, math.pi, 2 * math.pi, 18)
        back = np.concatenate([top, [[fcx + a + vol + flare, ip.hair_length], [fcx, ip.hair_length + 6], [fcx - a - vol - flare, ip.hair_length]]])
        cv.poly(back, _scale(hair_col, 0.8), hair_aux)
    elif style == "curly":
        tt = _CLOUD_T
        rr = 1 + 0.05 * np.sin(9 * tt + ip.curl_phase) + 0.03 * np.sin(14 * tt)
        cloud = np.stack([fcx + (a + 2.0 * vol) * rr * np.cos(tt), cy - 16 + (bt + 1.0 * vol) * rr * np.sin(tt)], 1)
        cv.poly(cloud, _scale(hair_col, 0.85), hair_aux)

    # --- shoulders and neck (rotate with the head; the body leans too)
    cv.ellipse((fcx, 112 + 26), (a * 2.0, 36), 0, nu.clothing, _aux(skin=0.05))
    neck_top = cy + bb * 0.45
    nw = ip.neck_w
    neck = [[fcx - nw, neck_top], [fcx + nw, neck_top], [fcx + nw * 1.05, 106], [fcx + nw * 1.6, 118], [fcx - nw * 1.6, 118], [fcx - nw * 1.05, 106]]
    cv.poly(neck, _scale(skin, 0.93), skin_aux)
    cv.shade_poly(neck, 0.35)

    # --- ears
    for s in (-1, 1):
        ex = fcx + s * (a * squash + 1.0 - 0.12 * yaw * s * a) - yaw * 3.0
        ey = (ip.eye_y + ip.nose_y) / 2 + 1
        cv.ellipse((ex, ey), (5.0 * ip.ear_size, 10.0 * ip.ear_size), s * 10, _scale(skin, 0.93), skin_aux)
        cv.shade_ellipse((ex + s * 1.0, ey), (2.4 * ip.ear_size, 7.0 * ip.ear_size), 0.3, s * 10)
        cv.shade_ellipse((ex - s * 3.0, ey), (2.5, 9.0 * ip.ear_size), 0.25, s * 10)

    # --- face
    cv.poly(outline, skin, skin_aux)
    cv.shade_poly(outline, 0.0)  # carve the neck shadow out of the face; blur keeps a soft jaw shadow

    # cheek bones / temples / side light
    for s in (-1, 1):
        cx_, cy_ = feat(56 + s * a * 0.62, ip.eye_y + 14, 0.3)
        cv.shade_ellipse((cx_, cy_), (5, 4), -0.05)
        if s == shadow_side:
            cv.shade_ellipse(feat(56 + s * a * 0.7, ip.eye_y + 26, 0.2), (6, 14), 0.08 * side_strength)

    # --- beard (under the mouth, above the jaw line)
    if ip.beard:
        nx_, ny_ = feat(56, ip.nose_y, 1.0)
        mx_, my_ = feat(56, ip.mouth_y, 0.6)
        jaw_pts = outline[(outline[:, 1] > ny_ + 2)]
        jaw_pts = jaw_pts[np.argsort(np.arctan2(jaw_pts[:, 1] - cy, jaw_pts[:, 0] - fcx))[::-1]]  # left -> right along the jaw
        upper = [[mx_ + ip.mouth_w + 4, ny_ + 6], [mx_, ny_ + 3.5], [mx_ - ip.mouth_w - 4, ny_ + 6]]
        region = np.concatenate([jaw_pts, upper]) if ip.moustache else jaw_pts
        if ip.beard == 1:
            cv.poly(region, _mix(skin, hair_col, 0.3), _aux(skin=0.12))
        else:
            cv.poly(region, _mix(skin, hair_col, 0.85), _aux(skin=0.05, hair=0.25))
    elif ip.moustache:
        mx_, my_ = feat(56, ip.mouth_y, 0.6)
        ny_ = feat(56, ip.nose_y, 1.0)[1]
        mw_ = ip.mouth_w
        top = max(ny_ + 3.5, my_ - ip.lip_top - 7.0)
        cv.poly([[mx_ - mw_ - 1.5, my_ + 1], [mx_ - mw_ * 0.6, top], [mx_ + mw_ * 0.6, top], [mx_ + mw_ + 1.5, my_ + 1],
                 [mx_ + mw_ * 0.5, my_ - ip.lip_top - 0.3], [mx_ - mw_ * 0.5, my_ - ip.lip_top - 0.3]], _mix(skin, hair_col, 0.8), _aux(skin=0.05, hair=0.25))

    # --- eyes and brows
    open_ = max(0.0, nu.eye_open)
    sclera = (215.0, 222.0, 230.0)
    lash = _scale(_mix(hair_col, (15, 15, 20), 0.6), 0.6)
    brow_col = _mix(_scale(hair_col, 0.8), skin, 1 - ip.brow_density)
    for s in (-1, 1):
        ex, ey = feat(56 + s * ip.eye_dx, ip.eye_y, 0.55)
        w = ip.eye_w * (1 - 0.3 * yaw * s)
        h_up = ip.eye_h * open_
        h_lo = ip.eye_h * 0.55 * min(1.0, open_ + 0.3)
        ca, sa = math.cos(math.radians(-s * ip.eye_tilt)), math.sin(math.radians(-s * ip.eye_tilt))
        xs = _U13
        up = np.stack([xs * w, -h_up * (1 - xs**2) ** 0.8 - 0.3 * h_up * xs * s], 1)  # peak slightly inward
        lo = np.stack([xs * w, h_lo * (1 - xs**2)], 1)

        def place(pts: np.ndarray) -> np.ndarray:
            return np.stack([ex + pts[:, 0] * ca - pts[:, 1] * sa, ey + pts[:, 0] * sa + pts[:, 1] * ca], 1)

        cv.shade_ellipse((ex, ey - 1.5), (w + 3.5, ip.eye_h + 4.5), 0.16)
        if open_ > 0.15:
            cv.poly(place(np.concatenate([up, lo[::-1]])), sclera, _aux())
            ix, iy = ex + nu.gaze_x * w * 0.3, ey + nu.gaze_y
            cv.ellipse((ix, iy), (ip.iris_r, ip.iris_r), 0, ip.iris, _aux(skin=0.1))
            cv.ellipse((ix, iy), (ip.iris_r, ip.iris_r), 0, _scale(ip.iris, 0.5), _aux(), 0.6)
            cv.ellipse((ix, iy), (ip.iris_r * 0.42, ip.iris_r * 0.42), 0, (12, 10, 10), _aux())
            cv.ellipse((ix + lx * 1.4, iy + ly * 1.4 - 0.6), (0.7, 0.7), 0, (245, 245, 245), _aux())
            # lids clip the iris: fill skin between the almond and a box around it
            hbox = ip.iris_r + 2.5
            cv.poly(place(np.concatenate([up, [[w + 0.5, -hbox], [-w - 0.5, -hbox]]])), _scale(skin, 0.97), skin_aux)
            cv.poly(place(np.concatenate([lo, [[w + 0.5, hbox], [-w - 0.5, hbox]]])), skin, skin_aux)
        cv.line(place(up), lash, _aux(hair=0.2), 1.1)
        cv.line(place(lo), _scale(skin, 0.7), _aux(skin=0.05), 0.5)
        crease = place(np.stack([xs * w * 0.9, -h_up * (1 - xs**2) ** 0.8 - 2.4 - ip.eye_h * 0.3], 1))
        cv.line(crease, _scale(skin, 0.82), skin_aux, 0.6)
        # brow: u=-1 inner end, u=+1 outer end
        uu = _U9
        bx = ex + s * (uu * ip.brow_len / 2 + 1.5)
        bcy = ey - ip.brow_gap - nu.brow_raise - ip.brow_arch * (1 - uu**2) - ip.brow_angle * uu * ip.brow_len / 2
        th = ip.brow_thickness * (1.15 - 0.35 * (uu + 1) / 2)
        brow = np.concatenate([np.stack([bx, bcy - th / 2], 1), np.stack([bx, bcy + th / 2], 1)[::-1]])
        cv.poly(brow, brow_col, _aux(skin=0.08, hair=0.12))

    # --- nose (mostly soft shading, plus nostrils)
    nx, ny = feat(56, ip.nose_y, 1.0)
    top_x, top_y = feat(56, ip.eye_y, 0.6)
    for s in (-1, 1):
        k = 0.14 + (0.2 * side_strength if s == shadow_side else 0.0)
        cv.shade_line([[top_x + s * ip.nose_bridge, top_y], [nx + s * (ip.nose_bridge + 1), ny - 6], [nx + s * ip.nose_w * 0.9, ny - 1]], k, 2.2)
        cv.shade_ellipse((nx + s * ip.nose_w * 0.8, ny), (2.6, 3.0), 0.16 + (0.12 * side_strength if s == shadow_side else 0))
    cv.shade_ellipse((nx, ny + 3.2), (ip.nose_w * 0.9, 2.2), 0.3)
    cv.shade_ellipse((nx - lx * 1.5, ny - 2.5), (2.2, 2.5), -0.16)
    cv.shade_line([[top_x, top_y + 2], [nx, ny - 4]], -0.1, 2.0)
    for s in (-1, 1):
        cv.ellipse((nx + s * ip.nose_w * 0.42, ny + 1.6), (2.0, 1.1), s * 15, _scale(skin, 0.42), _aux())
        t0, t1 = (-0.4 * math.pi, 0.5 * math.pi) if s > 0 else (0.5 * math.pi, 1.4 * math.pi)
        cv.line(_arc(nx + s * ip.nose_w * 0.78, ny, 2.6, 2.6, t0, t1, 7), _scale(skin, 0.78), skin_aux, 0.6)

    # --- mouth
    mx, my = feat(56, ip.mouth_y, 0.6)
    mw = ip.mouth_w * (1 + 0.12 * nu.smile) * (1 - 0.1 * abs(yaw))
    uu = _U15
    xsm = mx + uu * mw
    line_y = my - nu.smile * 3.0 * uu**2 + nu.smile * 0.8
    opening = nu.mouth_open * 7.0 * (1 - uu**2) ** 0.7
    upper_lip_bottom = line_y - opening * 0.35
    lower_lip_top = line_y + opening * 0.65
    bow = ip.lip_top * (1 - uu**2) ** 0.5 * (1 - 0.35 * np.exp(-(uu / 0.15) ** 2)) + 0.3
    upper_lip_top = upper_lip_bottom - bow
    lower_lip_bottom = lower_lip_top + ip.lip_bot * (1 - uu**2) ** 0.6 + 0.3
    cv.shade_ellipse((mx, lower_lip_bottom.max() + 2.0), (mw * 0.55, 2.0), 0.18)
    if nu.smile > 0.2:
        for s in (-1, 1):
            cv.shade_line([[nx + s * (ip.nose_w + 1), ny], [mx + s * (mw + 3), my - 1], [mx + s * (mw + 3.5), my + 4]], 0.12 * nu.smile, 1.6)
    if nu.mouth_open > 0.05:
        cv.poly(np.concatenate([np.stack([xsm, upper_lip_bottom], 1), np.stack([xsm, lower_lip_top], 1)[::-1]]), (35, 30, 70), _aux())
        if nu.mouth_open > 0.25:
            teeth_bottom = upper_lip_bottom + opening * 0.45
            m = np.abs(uu) < 0.7
            cv.poly(np.concatenate([np.stack([xsm[m], upper_lip_bottom[m]], 1), np.stack([xsm[m], teeth_bottom[m]], 1)[::-1]]), (200, 210, 215), _aux())
    lip_aux = _aux(skin=0.08)
    cv.poly(np.concatenate([np.stack([xsm, upper_lip_top], 1), np.stack([xsm, upper_lip_bottom], 1)[::-1]]), _scale(ip.lip, 0.85), lip_aux)
    cv.poly(np.concatenate([np.stack([xsm, lower_lip_top], 1), np.stack([xsm, lower_lip_bottom], 1)[::-1]]), ip.lip, lip_aux)
    cv.line(np.stack([xsm, line_y], 1), _scale(ip.lip, 0.45), _aux(), 0.7)
    cv.shade_ellipse((mx, lower_lip_top.max() + ip.lip_bot * 0.5), (mw * 0.35, 0.9), -0.12)

    for x, y, rad in ip.moles:
        cv.ellipse(feat(x, y, 0.4), (rad, rad), 0, _scale(skin, 0.45), _aux())

    if nu.age > 0.3:  # wrinkles: forehead lines, nasolabial folds, crow's feet
        depth = 0.12 * (nu.age - 0.3) / 0.7
        brow_y = ip.eye_y - ip.brow_gap
        for k in range(3):
            y = brow_y - 6.0 - 4.0 * k
            cv.shade_line([feat(56 + x, y + 0.8 * abs(x) / 10, 0.4) for x in (-14.0, -5.0, 5.0, 14.0)], depth, 1.0)
        for s in (-1, 1):
            cv.shade_line([feat(56 + s * (ip.nose_w + 2), ip.nose_y + 1, 0.8), feat(56 + s * (ip.mouth_w + 2.5), ip.mouth_y + 3, 0.5)],
                          1.5 * depth, 1.4)
            ex, ey = feat(56 + s * (ip.eye_dx + ip.eye_w + 2.5), ip.eye_y, 0.4)
            for dy in (-2.0, 0.0, 2.0):
                cv.shade_line([[ex, ey + dy * 0.6], [ex + s * 3.5, ey + dy]], depth, 0.8)

    # --- front hair
    if style != "bald":
        cap_vol = 1.0 if style == "buzz" else vol
        outer = _arc(fcx, cy, a + cap_vol, bt + cap_vol, math.pi, 2 * math.pi, 20)
        hy = feat(56, ip.hairline, 0.3)[1]
        temple_y = ip.eye_y - 9
        tt = _HAIRLINE_T
        hl = np.stack([fcx + a * 0.86 * squash * np.cos(tt), temple_y + (temple_y - hy) * np.sin(tt)], 1)
        hl[:, 1] -= ip.hair_recede * np.sin(2 * tt) ** 2
        inner = np.concatenate([[[fcx + a * squash - 1.2, cy - 1]], hl, [[fcx - a * squash + 1.2, cy - 1]]])
        col = _mix(hair_col, skin, 0.45) if style == "buzz" else hair_col
        cv.poly(np.concatenate([outer, inner]), col, hair_aux)
        if style in ("fringe", "long", "curly"):
            xs = _U9
            fy = ip.fringe_y + ip.fringe_tilt * xs + np.array(ip.fringe_jag) + (0 if style == "fringe" else -6 + 2 * abs(ip.fringe_tilt))
            edge = np.stack([fcx + xs * a * 0.88, fy], 1)
            fringe = np.concatenate([[[fcx - a * 0.9, temple_y]], edge, [[fcx + a * 0.9, temple_y]], hl[1:-1]])
            cv.poly(fringe, _scale(col, 0.95), hair_aux)
            cv.shade_line(edge + [0, 1.0], 0.2, 2.0)
        if style == "long":
            for s in (-1, 1):
                lock = [[fcx + s * (a + vol), cy - 12], [fcx + s * (a + vol * 1.8), ip.hair_length], [fcx + s * (a * 0.78), ip.hair_length - 4],
                        [fcx + s * a * 0.84, cy + 8], [fcx + s * a * 0.86, temple_y]]
                cv.poly(lock, _scale(hair_col, 0.92), hair_aux)
                cv.shade_line([[fcx + s * a * 0.8, temple_y], [fcx + s * a * 0.78, cy + 10], [fcx + s * a * 0.74, ip.hair_length - 6]], 0.25, 2.5)
        cv.shade_line(hl, 0.12, 2.0)
    else:
        cv.shade_ellipse((fcx - lx * 8, cy - bt * 0.7), (10, 5), -0.1)

    # --- glasses
    if ip.glasses:
        gcol = ip.glasses_color
        centers = [feat(56 + s * ip.eye_dx, ip.eye_y, 0.55) for s in (-1, 1)]
        for s, (gx, gy) in zip((-1, 1), centers):
            gw, gh = (ip.eye_w + 3.5) * (1 - 0.3 * yaw * s), ip.eye_w + 1.5
            if ip.glasses == 1:
                cv.ellipse((gx, gy + 0.5), (gw, gh), 0, gcol, _aux(), 0.9)
            else:
                cv.line([[gx - gw, gy - gh * 0.8], [gx + gw, gy - gh * 0.8], [gx + gw * 0.9, gy + gh * 0.8], [gx - gw * 0.9, gy + gh * 0.8], [gx - gw, gy - gh * 0.8]], gcol, _aux(), 0.9)
            cv.line([[gx + s * gw, gy - 1], [fcx + s * a * 0.98, gy - 0.5]], gcol, _aux(), 0.8)
            cv.shade_ellipse((gx, gy + gh + 1.5), (gw * 0.7, 1.0), 0.1)
        cv.line([[centers[0][0] + ip.eye_w + 3.2, centers[0][1] - 1], [centers[1][0] - ip.eye_w - 3.2, centers[1][1] - 1]], gcol, _aux(), 0.8)

    # --- the wide world's accessories of one photo
    if nu.sunglasses:
        centers = [feat(56 + s * ip.eye_dx, ip.eye_y, 0.55) for s in (-1, 1)]
        for s, (gx, gy) in zip((-1, 1), centers):
            gw = (ip.eye_w + 4.0) * (1 - 0.3 * yaw * s)
            cv.ellipse((gx, gy + 1.0), (gw, ip.eye_w + 2.0), 0, (28.0, 26.0, 30.0), _aux())
            cv.line([[gx + s * gw, gy - 1], [fcx + s * a * 0.98, gy - 0.5]], (20.0, 20.0, 22.0), _aux(), 1.0)
        cv.line([[centers[0][0] + ip.eye_w + 3.5, centers[0][1] - 1], [centers[1][0] - ip.eye_w - 3.5, centers[1][1] - 1]], (20.0, 20.0, 22.0), _aux(), 1.0)
    if nu.cap is not None:
        band_y = feat(56, ip.hairline, 0.3)[1] + 5.0
        crown = _arc(fcx, band_y, a + 3.0, ip.face_b_top * 0.75 + 4.0, math.pi, 2 * math.pi, 20)
        cv.poly(crown, nu.cap, _aux(skin=0.06))
        cv.ellipse((fcx + yaw * 6.0, band_y + 1.0), (a * 0.95, 3.5), 0, _scale(nu.cap, 0.8), _aux(skin=0.04))
        cv.shade_ellipse((fcx + yaw * 6.0, band_y + 6.0), (a * 0.8, 4.0), 0.25)

    return _finish(cv, ip, nu, r, bank, fcx, lx, ly, lz, style)


def _finish(cv: _Canvas, ip: IdentityParams, nu: NuisanceParams, r, bank, fcx, lx, ly, lz, style) -> np.ndarray:
    """Shade and texture the head layer, rotate it onto a background, light it, add noise.

    The 2x drawing is area-downsampled first (antialiasing; cv2's AA drawing on black makes
    albedo effectively premultiplied by coverage), then shading, texture and the roll warp run at 1x.
    """
    n = IMAGE_SIZE
    albedo = cv2.resize(cv.albedo, (n, n), interpolation=cv2.INTER_AREA).astype(np.float32)
    aux = cv2.resize(cv.aux, (n, n), interpolation=cv2.INTER_AREA)
    # ellipsoid (Lambert) shading of the head
    u = (_GRID_X + (55.5 - fcx - nu.yaw * 6.0)) * (1.0 / (ip.face_a * 1.1))
    v = (_GRID_Y + (55.5 - ip.face_cy)) * (1.0 / ((ip.face_b_top + ip.face_b_bot) * 0.55))
    r2 = u * u + v * v
    k = 1.0 / np.sqrt(np.maximum(r2, 1.0))
    nz = np.sqrt(np.maximum(0.0, 1.0 - r2))
    ndotl = np.maximum(0.0, (u * lx + v * ly) * k + nz * lz)
    kk = 1.0 / (nu.ambient + nu.diffuse)
    shade = (nu.ambient * kk + (nu.diffuse * kk) * ndotl) * (1.0 - cv2.GaussianBlur(cv.shadow, (0, 0), 1.3))
    hair_tex = bank["grain"] if style in ("buzz", "short", "curly") else bank["streak"]
    gain = (aux[..., 1] * _crop(bank["skin"], n, r) + aux[..., 2] * _crop(hair_tex, n, r) + 1.0) * shade
    albedo = cv2.multiply(albedo, cv2.merge([gain, gain, gain]))
    layer = cv2.merge([albedo, aux[..., 0].astype(np.float32) * np.float32(1.0 / 255.0)])

    # roll, scale and shift about the middle of the face
    m = cv2.getRotationMatrix2D((56.0, 70.0), -nu.roll, nu.scale)
    m[:, 2] += (nu.tx, nu.ty)
    layer = cv2.warpAffine(layer, m, (n, n), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    img = _background(r, bank)
    img *= 1.0 - layer[..., 3:4]
    img += layer[..., :3]

    # global illumination: ramp along the light direction, exposure, colour temperature
    norm = (math.hypot(lx, ly) + 1e-6) * n
    ramp = (nu.light_gradient * lx / norm) * _GRID_X + (nu.light_gradient * ly / norm) * _GRID_Y + 1.0
    temp = np.array([1 - 0.1 * nu.color_temp, 1.0, 1 + 0.1 * nu.color_temp], np.float32) * np.float32(nu.exposure)
    img *= ramp[..., None] * temp
    img = cv2.GaussianBlur(img, (0, 0), nu.blur)
    img += _crop(bank["sensor"], n, r) * np.float32(nu.sensor_noise)
    img += 0.5
    return np.clip(img, 0, 255).astype(np.uint8)


def render(seed: int, identity: int, sample: int) -> np.ndarray:
    """The image of (seed, identity, sample): draw_face(sample_identity(...), sample_nuisance(...))."""
    return draw_face(sample_identity(seed, identity), sample_nuisance(seed, identity, sample))

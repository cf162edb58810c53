"""Deterministic synthetic face-like images with identities.

This module is the library's default data set.  It is a **stand-in**: it lets
the library, its examples and its tests run anywhere, without downloading or
handling real faces.  The images are cartoon faces drawn from a handful of
geometric parameters, so numbers measured on them (accuracy, privacy, attack
success) say nothing about real face recognition.  Real results need real
faces.

Each identity has fixed parameters: head shape, size and skin brightness, eye
spacing, height, size and iris darkness, eyebrow thickness, length, angle and
arch, nose length and width, mouth width and thickness, hairline height,
curvature, widow's peak and darkness, and a fixed fine texture (a smoothed
random pattern at pixel scale plus a few moles).  The fine texture and the
sharp-ish feature edges put identity partly in high spatial frequencies, so
identity survives when the low-frequency channels of an 8x8-block DCT are
dropped.

Each image varies: translation (up to 4 % of the size), in-plane rotation (up
to 7 degrees), scale (+-10 %), an illumination gradient (direction and
strength), expression (mouth curvature, eye openness), background level and
additive Gaussian noise.

Randomness comes only from ``np.random.default_rng(seed)``.  Identity ``k``
uses the ``k``-th stream spawned from it, and image ``j`` of that identity a
stream spawned from the identity's stream, so the output is identical on every
call with the same arguments, and identity ``k`` / image ``j`` do not depend on
how many identities or images were asked for (for a given ``size``).
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy import ndimage

__all__ = ["make_synthetic_faces"]

# Names of the per-image random parameters, in the order of _draw_image_params.
_IMAGE_PARAMS = ("tx", "ty", "rot", "scale", "light_amp", "light_dir",
                 "smile", "openness", "background", "noise_std")
# Images rendered at once: keeps the temporaries small and cache friendly.
_CHUNK = 32
# Range of the number of moles per identity (low inclusive, high exclusive).
_MOLES_MIN = 3
_MOLES_MAX = 7
# Vertical centre of the head in face coordinates.
_HEAD_CV = 0.06


def _validate(num_identities: object, images_per_identity: object, size: object, seed: object) -> None:
    """Check the arguments of :func:`make_synthetic_faces`.

    :param num_identities: number of identities, an int >= 2.
    :param images_per_identity: images per identity, an int >= 1.
    :param size: image side in pixels, an int multiple of 8 and >= 32.
    :param seed: seed for ``np.random.default_rng``, a non-negative int.
    :raises ValueError: when an argument is out of range or of the wrong type.
    """

    def as_int(value: object) -> int | None:
        """:param value: candidate. :return: ``int(value)`` for an integer that is not a bool, else None."""
        if isinstance(value, numbers.Integral) and not isinstance(value, bool):
            return int(value)
        return None

    n = as_int(num_identities)
    if n is None or n < 2:
        raise ValueError(f"num_identities must be an int >= 2, got {num_identities!r}")
    n = as_int(images_per_identity)
    if n is None or n < 1:
        raise ValueError(f"images_per_identity must be an int >= 1, got {images_per_identity!r}")
    n = as_int(size)
    if n is None or n < 32 or n % 8 != 0:
        raise ValueError(f"size must be an int that is a multiple of 8 and >= 32, got {size!r}")
    n = as_int(seed)
    if n is None or n < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def _soft(signed: np.ndarray, width: float) -> np.ndarray:
    """Anti-aliased mask from a signed distance (positive inside).

    The mask is a linear ramp across the edge (box-filter anti-aliasing).

    :param signed: signed distance to the shape's edge, positive inside; it is
        overwritten with the result when it is a temporary the caller owns.
    :param width: total width of the ramp, in the same units as ``signed``.
    :return: mask in [0, 1], 0.5 on the edge, same dtype as ``signed``.
    """
    out = signed * np.float32(1.0 / width)
    out += np.float32(0.5)
    return np.clip(out, 0.0, 1.0, out=out)


def _ellipse(u: np.ndarray, v: np.ndarray, cu: np.ndarray | float, cv: np.ndarray | float,
             au: np.ndarray | float, av: np.ndarray | float, width: float) -> np.ndarray:
    """Soft mask of an axis-aligned ellipse.

    :param u: horizontal face coordinate, shape (M, H, W).
    :param v: vertical face coordinate (downwards), shape (M, H, W).
    :param cu: centre, horizontal, broadcastable to (M, H, W).
    :param cv: centre, vertical, broadcastable to (M, H, W).
    :param au: horizontal semi-axis, broadcastable to (M, H, W).
    :param av: vertical semi-axis, broadcastable to (M, H, W).
    :param width: width of the anti-aliasing ramp in face units.
    :return: mask in [0, 1], shape (M, H, W).
    """
    du = (u - cu) / au
    dv = (v - cv) / av
    du *= du
    dv *= dv
    du += dv
    # (1 - r^2) / 2 equals the distance-like (1 - r) to first order at the edge.
    np.subtract(np.float32(1.0), du, out=du)
    du *= np.float32(0.5) * np.minimum(au, av)
    return _soft(du, width)


def _paint(img: np.ndarray, mask: np.ndarray, value: np.ndarray | float) -> None:
    """Alpha-blend ``value`` into ``img`` in place where ``mask`` is 1.

    :param img: canvas, shape (M, H, W), modified in place.
    :param mask: coverage in [0, 1], shape (M, H, W).
    :param value: grey level, broadcastable to (M, H, W).
    """
    delta = value - img
    delta *= mask
    img += delta


def _draw_identity_params(rng: np.random.Generator, size: int) -> tuple[dict[str, float], np.ndarray]:
    """Draw the fixed parameters of one identity.

    :param rng: the identity's own random stream.
    :param size: image side in pixels (sets the resolution of the detail field).
    :return: (params, detail): params maps each geometric / tonal parameter
        name to its value; detail is a float32 (size, size) field of grey-level
        offsets over face coordinates [-1, 1]^2 (fine texture and moles).
    """
    p: dict[str, float] = {}
    p["head_a"] = rng.uniform(0.50, 0.66)       # horizontal semi-axis
    p["head_b"] = rng.uniform(0.66, 0.80)       # vertical semi-axis
    p["skin"] = rng.uniform(135.0, 215.0)       # skin grey level
    p["eye_dx"] = rng.uniform(0.19, 0.31)       # half eye spacing
    p["eye_y"] = rng.uniform(-0.16, 0.02)       # eye height
    p["eye_r"] = rng.uniform(0.065, 0.115)      # eye half-width
    p["iris"] = rng.uniform(10.0, 80.0)         # iris grey level
    p["brow_t"] = rng.uniform(0.018, 0.055)     # eyebrow half-thickness
    p["brow_len"] = rng.uniform(1.0, 1.6)       # eyebrow half-length / eye_r
    p["brow_ang"] = rng.uniform(-0.30, 0.30)    # eyebrow tilt (radians)
    p["brow_arch"] = rng.uniform(-0.01, 0.05)   # eyebrow arch
    p["brow_gap"] = rng.uniform(0.09, 0.16)     # eyebrow height above eye
    p["nose_len"] = rng.uniform(0.16, 0.30)     # nose length below eyes
    p["nose_w"] = rng.uniform(0.04, 0.09)       # nose half-width
    p["mouth_gap"] = rng.uniform(0.10, 0.20)    # mouth distance below nose
    p["mouth_w"] = rng.uniform(0.12, 0.24)      # mouth half-width
    p["mouth_h"] = rng.uniform(0.014, 0.045)    # mouth half-thickness
    p["hair_y"] = rng.uniform(-0.62, -0.32)     # hairline height at centre
    p["hair_curve"] = rng.uniform(-0.4, 0.9)    # hairline curvature
    p["hair_peak"] = rng.uniform(-0.10, 0.15)   # widow's peak (+ = down)
    p["hair_grey"] = rng.uniform(10.0, 95.0)    # hair grey level
    p["hair_out"] = rng.uniform(1.03, 1.12)     # hair volume around the head

    # Fine texture: white noise smoothed at pixel scale, unit std, in grey levels.
    texture = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma=0.8, mode="wrap")
    texture -= texture.mean()
    texture *= rng.uniform(7.0, 13.0) / (texture.std() + 1e-12)

    # Moles: small dark dots, darkening the skin by a fraction ``depth``.
    num_moles = int(rng.integers(_MOLES_MIN, _MOLES_MAX))
    mole_u = rng.uniform(-0.45, 0.45, num_moles)
    mole_v = rng.uniform(-0.25, 0.55, num_moles)
    mole_r = rng.uniform(0.018, 0.035, num_moles)
    mole_depth = rng.uniform(0.35, 0.65, num_moles)
    pixel = 2.0 / size
    grid = (np.arange(size) + 0.5) * pixel - 1.0
    gu = grid[None, :]
    gv = grid[:, None]
    darkening = np.zeros((size, size))
    for mu, mv, mr, depth in zip(mole_u, mole_v, mole_r, mole_depth):
        dist = np.sqrt((gu - mu) ** 2 + (gv - mv) ** 2)
        coverage = np.clip((mr - dist) / pixel + 0.5, 0.0, 1.0)
        darkening = np.maximum(darkening, depth * coverage)
    detail = texture - p["skin"] * darkening
    return p, detail.astype(np.float32)


def _draw_image_params(rng: np.random.Generator) -> np.ndarray:
    """Draw the random variation of one image.

    :param rng: the image's own random stream.
    :return: float64 array with one value per name in ``_IMAGE_PARAMS``:
        translation x, y (face units, the image spans [-1, 1]), rotation
        (radians), scale, illumination strength, illumination direction
        (radians), mouth curvature, eye openness, background grey level,
        noise standard deviation (grey levels).
    """
    return np.array([
        rng.uniform(-0.08, 0.08),                   # tx: up to 4 % of the size
        rng.uniform(-0.08, 0.08),                   # ty
        np.deg2rad(rng.uniform(-7.0, 7.0)),         # rotation
        rng.uniform(0.90, 1.10),                    # scale
        rng.uniform(0.0, 0.40),                     # illumination strength
        rng.uniform(0.0, 2.0 * np.pi),              # illumination direction
        rng.uniform(-0.6, 1.0),                     # mouth curvature (+ = smile)
        rng.uniform(0.45, 1.15),                    # eye openness
        rng.uniform(8.0, 55.0),                     # background level
        rng.uniform(3.0, 8.0),                      # noise std
    ])


def _sample_detail(details: np.ndarray, labels: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Sample each image's identity detail field bilinearly, clamping at the borders.

    :param details: per-identity fields, float32 (K, S, S).
    :param labels: identity of each image, shape (M,).
    :param rows: fractional row positions, float32 (M, H, W).
    :param cols: fractional column positions, float32 (M, H, W).
    :return: sampled values, float32 (M, H, W).
    """
    side = details.shape[1]
    flat = details.reshape(-1)
    r0 = np.clip(np.floor(rows), 0, side - 2)
    c0 = np.clip(np.floor(cols), 0, side - 2)
    fr = np.clip(rows - r0, 0.0, 1.0)
    fc = np.clip(cols - c0, 0.0, 1.0)
    base = (labels * (side * side)).astype(np.intp)[:, None, None]
    i00 = r0.astype(np.intp)
    i00 *= side
    i00 += c0.astype(np.intp)
    i00 += base
    top = flat.take(i00)
    top += fc * (flat.take(i00 + 1) - top)
    i00 += side
    bottom = flat.take(i00)
    bottom += fc * (flat.take(i00 + 1) - bottom)
    bottom -= top
    bottom *= fr
    top += bottom
    return top


def _paint_features(img: np.ndarray, q: dict[str, np.ndarray], abs_u: np.ndarray, u2: np.ndarray, v: np.ndarray,
                    edge: float) -> None:
    """Paint the nose, eyes, eyebrows and mouth of :func:`_render`'s faces into ``img`` (in place), in face
    coordinates ``|u|``, ``u**2`` and ``v``."""
    f32 = np.float32
    skin, eye_y, hair_grey = q["skin"], q["eye_y"], q["hair_grey"]
    # Nose: a shaded ridge and two nostrils.
    nose_w = q["nose_w"]
    nose_top = eye_y + f32(0.04)
    nose_bottom = eye_y + q["nose_len"]
    along = np.clip((v - nose_top) / (nose_bottom - nose_top), 0.0, 1.0)
    ridge = _soft(nose_w * (f32(0.3) + f32(0.7) * along) - abs_u, edge)
    ridge *= _soft(v - nose_top, edge)
    ridge *= _soft(nose_bottom - v, edge)
    ridge *= _soft(abs_u - nose_w * (f32(0.15) + f32(0.55) * along), edge)
    img *= f32(1.0) - f32(0.16) * ridge
    nostrils = _ellipse(abs_u, v, f32(0.55) * nose_w, nose_bottom, f32(0.45) * nose_w, 0.022, edge)
    _paint(img, nostrils, f32(0.45) * skin)

    # Eyes (mirrored through |u|): sclera, iris, pupil, upper lid.
    eye_dx, eye_r = q["eye_dx"], q["eye_r"]
    eye_h = eye_r * f32(0.55) * q["openness"]
    du = abs_u - eye_dx
    dv = v - eye_y
    sclera = _ellipse(du, dv, 0.0, 0.0, eye_r, eye_h, edge)
    _paint(img, sclera, np.minimum(skin + f32(25.0), f32(235.0)))
    r_eye = np.sqrt(du * du + dv * dv)
    iris = _soft(f32(0.5) * eye_r - r_eye, edge)
    iris *= sclera
    _paint(img, iris, q["iris"])
    pupil = _soft(f32(0.2) * eye_r - r_eye, edge)
    pupil *= sclera
    _paint(img, pupil, f32(5.0))
    lid = _ellipse(du, dv, 0.0, 0.0, eye_r + f32(0.012), eye_h + f32(0.012), edge)
    lid *= f32(1.0) - sclera
    lid *= _soft(-dv, 2 * edge)
    _paint(img, lid, f32(0.45) * skin)

    # Eyebrows: thin, tilted, arched bars mirrored between the two sides.
    dv = v - (eye_y - q["brow_gap"])
    angle = q["brow_ang"]
    p = np.cos(angle) * du + np.sin(angle) * dv
    r = np.cos(angle) * dv - np.sin(angle) * du
    half_len = q["brow_len"] * eye_r
    r += q["brow_arch"] * (f32(1.0) - (p / half_len) ** 2)
    brow = _soft(q["brow_t"] - np.abs(r), edge)
    brow *= _soft(half_len - np.abs(p), edge)
    _paint(img, brow, f32(0.6) * hair_grey)

    # Mouth: a curved bar; a positive smile lifts the corners.
    smile, mouth_w = q["smile"], q["mouth_w"]
    t2 = u2 / (mouth_w * mouth_w)
    mouth_line = nose_bottom + q["mouth_gap"] + f32(0.03) * smile - f32(0.06) * smile * t2
    lips = _soft(q["mouth_h"] * (f32(1.0) - f32(0.6) * t2) - np.abs(v - mouth_line), edge)
    lips *= _soft(mouth_w - abs_u, edge)
    _paint(img, lips, f32(0.4) * skin)


def _render(q: dict[str, np.ndarray], labels: np.ndarray, details: np.ndarray,
            noise: np.ndarray, size: int) -> np.ndarray:
    """Render a chunk of faces.

    :param q: parameter name -> float32 array of shape (M, 1, 1), holding both
        the identity parameters (repeated per image) and the image parameters.
    :param labels: identity of each image, shape (M,).
    :param details: per-identity detail fields, float32 (K, size, size).
    :param noise: standard normal noise, float32 (M, size, size).
    :param size: image side in pixels.
    :return: uint8 images, shape (M, size, size).
    """
    m = labels.shape[0]
    f32 = np.float32
    pixel = 2.0 / size
    edge = pixel  # width of the anti-aliasing ramp, in face units
    grid = ((np.arange(size) + 0.5) * pixel - 1.0).astype(f32)
    x = grid[None, None, :]
    y = grid[None, :, None]

    # Face coordinates: undo the translation, scale and rotation of the image.
    xs = (x - q["tx"]) / q["scale"]
    ys = (y - q["ty"]) / q["scale"]
    cos_r, sin_r = np.cos(q["rot"]), np.sin(q["rot"])
    u = cos_r * xs + sin_r * ys
    v = cos_r * ys - sin_r * xs
    abs_u = np.abs(u)
    u2 = u * u

    skin, head_a, head_b = q["skin"], q["head_a"], q["head_b"]
    eye_y, hair_grey = q["eye_y"], q["hair_grey"]

    img = np.empty((m, size, size), dtype=f32)
    img[...] = q["background"]

    # Neck and shoulders, darker than the face.
    body = _soft(f32(0.55) * head_a - abs_u, edge) * _soft(v - f32(0.3), edge)
    np.maximum(body, _ellipse(u, v, 0.0, 1.45, 1.1, 0.55, edge), out=body)
    _paint(img, body, f32(0.72) * skin)

    # Ears.
    ear_v = _HEAD_CV + f32(0.5) * eye_y
    ears = _ellipse(abs_u, v, head_a, ear_v, 0.09, 0.15, edge)
    _paint(img, ears, f32(0.85) * skin)

    # Hair volume behind the upper head, the head, then hair above the hairline.
    hair_cap = _ellipse(u, v, 0.0, _HEAD_CV - 0.02, head_a * q["hair_out"], head_b * q["hair_out"], edge)
    _paint(img, hair_cap * _soft(_HEAD_CV - v, 4 * edge), hair_grey)
    ru = u2 / (head_a * head_a)
    rv = (v - _HEAD_CV) / head_b
    ru += rv * rv
    head = _soft((f32(1.0) - ru) * (f32(0.5) * np.minimum(head_a, head_b)), edge)
    np.clip(ru, 0.0, 1.0, out=ru)
    ru *= ru
    face_tone = skin * (f32(1.0) - f32(0.18) * ru)  # darker towards the rim
    _paint(img, head, face_tone)
    hairline = q["hair_y"] + q["hair_curve"] * u2 + q["hair_peak"] * np.exp(u2 * f32(-1.0 / 0.08**2))
    hair = hair_cap * _soft(hairline - v, edge)
    _paint(img, hair, hair_grey)

    # Fixed identity detail (fine texture and moles), moving with the face.
    detail = _sample_detail(details, labels, (v + f32(1.0)) / f32(pixel) - f32(0.5),
                            (u + f32(1.0)) / f32(pixel) - f32(0.5))
    skin_area = head * (f32(1.0) - hair)
    detail *= np.maximum(skin_area, f32(0.6) * hair)
    img += detail

    _paint_features(img, q, abs_u, u2, v, edge)

    # Illumination gradient in image coordinates, sensor noise, quantisation.
    img *= f32(1.0) + q["light_amp"] * (np.cos(q["light_dir"]) * x + np.sin(q["light_dir"]) * y)
    img += q["noise_std"] * noise
    np.rint(img, out=img)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def make_synthetic_faces(
    num_identities: int = 20,
    images_per_identity: int = 20,
    size: int = 64,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Generate deterministic synthetic face-like grayscale images.

    The images are a **stand-in** for real faces, so the library runs anywhere
    without real data; numbers measured on them are not face recognition
    results, and real results need real faces.  Each image shows a dark
    background, a lighter oval head with hair on top, eyes, eyebrows, a nose, a
    mouth, ears and shoulders.  Identity is set by fixed geometric and tonal
    parameters and a fixed fine texture with moles; each image adds its own
    translation, rotation, scale, illumination gradient, expression,
    background level and noise.

    :param num_identities: number of identities, an int >= 2.
    :param images_per_identity: number of images of each identity, an int >= 1.
    :param size: side of the square images in pixels, an int that is a
        multiple of 8 and >= 32 (e.g. 64 or 112).
    :param seed: non-negative int seed for ``np.random.default_rng``; the same
        arguments always give the same arrays.
    :return: (images, labels): images uint8 (N, size, size), labels int64 (N,)
        with values 0..num_identities-1, N = num_identities*images_per_identity,
        ordered by identity.
    :raises ValueError: when an argument is out of range or of the wrong type.
    """
    _validate(num_identities, images_per_identity, size, seed)
    num_identities = int(num_identities)
    images_per_identity = int(images_per_identity)
    size = int(size)
    n = num_identities * images_per_identity

    # Random draws: one stream per identity, one per image of that identity.
    root = np.random.default_rng(int(seed))
    identity_params: list[dict[str, float]] = []
    details = np.empty((num_identities, size, size), dtype=np.float32)
    image_params = np.empty((n, len(_IMAGE_PARAMS)))
    noise = np.empty((n, size, size), dtype=np.float32)
    for k, identity_rng in enumerate(root.spawn(num_identities)):
        param_rng, images_rng = identity_rng.spawn(2)
        params, details[k] = _draw_identity_params(param_rng, size)
        identity_params.append(params)
        for j, image_rng in enumerate(images_rng.spawn(images_per_identity)):
            i = k * images_per_identity + j
            image_params[i] = _draw_image_params(image_rng)
            noise[i] = image_rng.standard_normal((size, size), dtype=np.float32)

    labels = np.repeat(np.arange(num_identities, dtype=np.int64), images_per_identity)
    columns: dict[str, np.ndarray] = {}
    for name in identity_params[0]:
        per_identity = np.array([params[name] for params in identity_params], dtype=np.float32)
        columns[name] = per_identity[labels]
    for c, name in enumerate(_IMAGE_PARAMS):
        columns[name] = image_params[:, c].astype(np.float32)

    images = np.empty((n, size, size), dtype=np.uint8)
    for start in range(0, n, _CHUNK):
        chunk = slice(start, min(start + _CHUNK, n))
        q = {name: values[chunk][:, None, None] for name, values in columns.items()}
        images[chunk] = _render(q, labels[chunk], details, noise[chunk], size)
    return images, labels

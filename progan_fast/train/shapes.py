"""The embedded procedural dataset: one antialiased circle, square or triangle per image on a plain or gently
graded background. Strong, simple structure so that a small GAN learns it at 32x32 in minutes, and a person can
tell at a glance from a sample grid whether training works (round vs. sharp-cornered shapes, clean edges)."""
import numpy as np

SHAPES = ("circle", "square", "triangle")
# Farthest reach of each shape from its centre in units of `radius`, at any of the allowed rotations (+-15 deg).
EXTENT = np.array([1.0, 1.09, 1.35])


def _colours(rng, n):
    """Background colour, its gradient end, and a shape colour that differs from both clearly."""
    bg = rng.random((n, 3)) * 0.8 + 0.1
    # Gentle gradient on half of the images: the far end differs by at most 0.15 per channel.
    delta = (rng.random((n, 3)) - 0.5) * 0.3 * (rng.random((n, 1)) < 0.5)
    bg_end = np.clip(bg + delta, 0.0, 1.0)
    fg = rng.random((n, 3))
    # Re-draw colours too close to the background (a few rounds, then push away), so every shape stands out.
    for _ in range(8):
        close = np.abs(fg - bg).sum(axis=1) < 0.6
        if not close.any():
            break
        fg[close] = rng.random((int(close.sum()), 3))
    close = np.abs(fg - bg).sum(axis=1) < 0.6
    fg[close] = 1.0 - bg[close]
    return bg, bg_end, fg


def render_shapes(num_images, resolution, rng):
    """num_images x 3 x resolution x resolution uint8, every random quantity drawn from `rng`
    (a numpy Generator) in a fixed order, so a seed fixes the images."""
    n = num_images
    kind = np.floor(rng.random(n) * len(SHAPES)).astype(np.int64)
    # Sizes and positions in units of the image side; the shape always lies entirely inside the image.
    radius = 0.14 + rng.random(n) * 0.18
    margin = radius * EXTENT[kind] + 0.02
    cx = margin + rng.random(n) * (1.0 - 2.0 * margin)
    cy = margin + rng.random(n) * (1.0 - 2.0 * margin)
    angle = (rng.random(n) - 0.5) * np.deg2rad(30.0)
    grad_angle = rng.random(n) * 2.0 * np.pi
    bg, bg_end, fg = _colours(rng, n)

    coords = (np.arange(resolution, dtype=np.float32) + 0.5) / resolution
    x = coords[None, None, :]
    y = coords[None, :, None]
    dx = x - cx[:, None, None].astype(np.float32)
    dy = y - cy[:, None, None].astype(np.float32)
    cos = np.cos(angle)[:, None, None].astype(np.float32)
    sin = np.sin(angle)[:, None, None].astype(np.float32)
    u = cos * dx + sin * dy
    v = -sin * dx + cos * dy
    r = radius[:, None, None].astype(np.float32)

    # Signed distance to the outline (negative inside; exact near the edges, which is all that matters here).
    k = kind[:, None, None]
    circle = np.sqrt(dx * dx + dy * dy) - r
    # Squares use `radius` scaled so that all three shapes have similar areas.
    square = np.maximum(np.abs(u), np.abs(v)) - r * np.float32(0.886)
    # Equilateral triangle, apex up (image y points down): the edges' outward normals point at 90, 210 and 330
    # degrees, inradius half the circumradius.
    # Circumradius 1.3 r, shifted so that the centre is that of its bounding box rather than its centroid.
    half = r * np.float32(0.65)
    vt = v - r * np.float32(0.325)
    triangle = np.maximum(np.maximum(vt, np.float32(-0.8660254) * u - np.float32(0.5) * vt),
                          np.float32(0.8660254) * u - np.float32(0.5) * vt) - half
    dist = np.where(k == 0, circle, np.where(k == 1, square, triangle))
    # Antialiasing: the fraction of a pixel covered by a straight edge at that distance (box filter).
    coverage = np.clip(np.float32(0.5) - dist * np.float32(resolution), 0.0, 1.0)

    t = (np.cos(grad_angle)[:, None, None] * (x - 0.5) + np.sin(grad_angle)[:, None, None] * (y - 0.5)) + 0.5
    t = np.clip(t, 0.0, 1.0).astype(np.float32)[:, None]
    background = (bg[:, :, None, None] + (bg_end - bg)[:, :, None, None] * t).astype(np.float32)
    image = background + (fg[:, :, None, None].astype(np.float32) - background) * coverage[:, None]
    return np.rint(image * np.float32(255.0)).clip(0, 255).astype(np.uint8)

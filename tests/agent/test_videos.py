import imageio.v2 as imageio
import numpy as np
import pytest

from grow_jax.agent.videos import write_episode_gif


def test_gif_written_annotated_and_never_overwritten(tmp_path):
    frames = [np.full((28, 28, 3), 40 * t, np.uint8) for t in range(3)]
    path = str(tmp_path / "vids" / "ep.gif")
    p1 = write_episode_gif(path, frames, "go to the red ball", ["left", "forward"], True)
    p2 = write_episode_gif(path, frames, "go to the red ball", ["left", "forward"], False)
    assert p1 == path and p2.endswith("ep_1.gif")
    gif = imageio.mimread(p1)
    assert len(gif) == 3
    h, w = gif[0].shape[:2]
    assert w >= 256 and h > w  # upscaled, text band below
    band = np.asarray(gif[0])[w:, :, :3]
    assert band.max() > 200  # text drawn
    with pytest.raises(ValueError, match="actions"):
        write_episode_gif(path, frames, "x", ["a"] * 5, True)

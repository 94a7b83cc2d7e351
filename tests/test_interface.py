"""The tracker interface: what ``check_image`` accepts and how it scales it, and ``update`` before
``init`` for every registered tracker."""
import numpy as np
import pytest

from acvm.registry import available_trackers, make_tracker
from acvm.tracker import Tracker, check_image


def test_uint8_passes_unchanged():
    img = np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3)
    out = check_image(img)
    assert out.dtype == np.uint8 and np.array_equal(out, img)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_zero_to_one_is_scaled(dtype):
    img = np.array([[[0.0, 0.5, 1.0]]], dtype=dtype)
    # hand-checked: 0.5 * 255 = 127.5 rounds (to even) to 128; 1.0 -> 255
    assert check_image(img).tolist() == [[[0, 128, 255]]]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_float_zero_to_255_is_kept(dtype):
    img = np.array([[[0.0, 1.5, 254.6]], [[300.0, -3.0, 17.0]]], dtype=dtype)
    # max > 1: read as 0..255, rounded, clipped
    assert check_image(img).tolist() == [[[0, 2, 255]], [[255, 0, 17]]]


def test_float_rule_is_max_at_most_one():
    # a float image whose brightest value is exactly 1.0 is 0..1 (white), one at 1.01 is 0..255 (nearly black)
    assert check_image(np.ones((1, 1, 3))).max() == 255
    assert check_image(np.full((1, 1, 3), 1.01)).max() == 1


def test_uint16_is_divided_by_257():
    img = np.array([[[0, 257, 65535]], [[128, 129, 32896]]], dtype=np.uint16)
    # 257 -> 1, 65535 -> 255, 128 -> 0 (0.498), 129 -> 1 (0.502), 32896 = 128 * 257 -> 128
    assert check_image(img).tolist() == [[[0, 1, 255]], [[0, 1, 128]]]


def test_grey_one_channel_and_rgba():
    grey = np.array([[10, 20]], dtype=np.uint8)
    assert check_image(grey).tolist() == [[[10, 10, 10], [20, 20, 20]]]
    assert check_image(grey[:, :, None]).tolist() == [[[10, 10, 10], [20, 20, 20]]]
    rgba = np.array([[[1, 2, 3, 4]]], dtype=np.uint8)
    assert check_image(rgba).tolist() == [[[1, 2, 3]]]
    assert check_image(np.array([[0.5]], dtype=np.float32)).tolist() == [[[128, 128, 128]]]


@pytest.mark.parametrize("dtype", [bool, np.int8, np.int32, np.int64, np.uint32, np.complex64, object])
def test_other_dtypes_are_named(dtype):
    with pytest.raises(TypeError, match=f"image has dtype {np.dtype(dtype)}"):
        check_image(np.zeros((4, 4, 3), dtype=dtype))


def test_nan_and_shapes_are_named():
    img = np.zeros((4, 4, 3), np.float32)
    img[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="frame 3 contains NaN or infinite"):
        check_image(img, where="frame 3")
    with pytest.raises(ValueError, match=r"got shape \(4, 4, 2\)"):
        check_image(np.zeros((4, 4, 2), np.uint8))
    with pytest.raises(TypeError, match="got list"):
        check_image([[0]])


def test_box_messages_print_plain_numbers():
    from acvm.tracker import check_init_box
    with pytest.raises(ValueError) as info:
        check_init_box(np.array([1000.5, 2.25, 3.0, 4.0]), (10, 10, 3))
    assert "(1000.5, 2.25, 3, 4) lies outside the 10×10 image" in str(info.value)
    assert "np.float64" not in str(info.value)


@pytest.mark.parametrize("name", available_trackers())
def test_update_before_init_is_named(name):
    tracker = make_tracker(name)
    with pytest.raises(RuntimeError, match=rf"^{tracker.name}: call init\(image, box\) before update\(image\)$"):
        tracker.update(np.zeros((32, 32, 3), np.uint8))


@pytest.mark.parametrize("name", ["ncc", "opencv-kcf"])
def test_a_failed_init_initialises_nothing(name):
    img = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    fresh = make_tracker(name)
    with pytest.raises(ValueError):
        fresh.init(img, (100, 100, 8, 8))
    assert not fresh.initialised
    with pytest.raises(RuntimeError, match="call init"):
        fresh.update(img)
    # an initialised tracker keeps its state after a refused init and goes on tracking
    tracker = make_tracker(name)
    tracker.init(img, (10, 10, 8, 8))
    assert tracker.initialised
    with pytest.raises(ValueError):
        tracker.init(img, (100, 100, 8, 8))
    assert tracker.initialised and tracker.update(img).shape == (4,)


def test_a_new_subclass_gets_the_check():
    class Minimal(Tracker):
        name = "minimal"

        def init(self, image, box):
            self.box = np.asarray(box, float)

        def update(self, image):
            return self.box

    t = Minimal()
    with pytest.raises(RuntimeError, match="minimal: call init"):
        t.update(None)
    t.init(None, (1, 2, 3, 4))
    assert t.update(None).tolist() == [1, 2, 3, 4]

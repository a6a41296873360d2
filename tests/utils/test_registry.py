import pytest

from vov3d.utils.registry import Registry


def test_lookup_ignores_case_and_unknown_names_list_the_known_ones():
    reg = Registry("dataset")

    @reg.register()
    class Kinetics:
        pass

    @reg.register(name="Ssv2")
    class SomethingV2:
        pass

    assert reg.get("kinetics") is Kinetics and reg.get("KINETICS") is Kinetics
    assert reg.get("ssv2") is SomethingV2 and "SSV2" in reg
    with pytest.raises(KeyError, match="unknown dataset 'ucf101'.*Kinetics"):
        reg.get("ucf101")


def test_registering_a_different_class_under_a_taken_name_fails():
    reg = Registry("model")

    @reg.register()
    class X3D:
        pass

    with pytest.raises(KeyError, match="twice"):
        reg.register(type("x3d", (), {}))


def test_scoped_registrations_end_with_the_block_and_keep_the_rest():
    reg = Registry("model")

    @reg.register()
    class X3D:
        pass

    with reg.scoped() as scoped:
        assert scoped is reg

        @reg.register()
        class Toy:
            pass

        assert reg.get("toy") is Toy and reg.names() == ["Toy", "X3D"]
    assert "toy" not in reg and reg.names() == ["X3D"] and reg.get("x3d") is X3D
    with pytest.raises(RuntimeError):
        with reg.scoped():
            reg.register(Toy)
            raise RuntimeError("a failing test")
    assert reg.names() == ["X3D"]

import pytest

from vov3d.utils.errors import UserError
from vov3d.utils.registry import Registry, UnknownNameError


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


def test_unknown_names_are_user_errors_with_the_closest_name():
    reg = Registry("model")

    @reg.register()
    class VoV3D:
        pass

    @reg.register(name="x3d")
    class Expand3D:
        pass

    with pytest.raises(UnknownNameError) as err:
        reg.get("VoV3DD")
    assert isinstance(err.value, KeyError) and isinstance(err.value, UserError)
    assert str(err.value) == "unknown model 'VoV3DD'; registered: Expand3D, VoV3D. Did you mean 'VoV3D'?"
    with pytest.raises(UnknownNameError, match="Did you mean 'x3d'"):
        reg.get("x3dd")  # the name it is registered under, which is what the config needs
    with pytest.raises(UnknownNameError) as err:
        reg.get("slowfast")
    assert "Did you mean" not in str(err.value)


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

"""The configuration round trip that optimizers and learning-rate schedules share.

Both keep their constructor arguments as attributes of the same names, listed in ``_config``;
:meth:`Configurable.get_config` reads them back and a state dict stores them, with the class
name, under ``"config"``.
"""
from .._validation import check_mapping


class Configurable:
    """Mixin: ``get_config`` from the names in ``_config``, and reading a saved config back."""

    #: names of the constructor arguments, each kept as an attribute of that name
    _config = ()

    def get_config(self):
        """The constructor arguments (a schedule's optimizer excepted), as JSON-able values.

        Returns
        -------
        dict
        """
        return {name: _jsonable(getattr(self, name)) for name in self._config}

    def _saved_config(self):
        """The ``"config"`` entry of a state dict: the class name and :meth:`get_config`."""
        return {"name": type(self).__name__, **self.get_config()}

    @classmethod
    def _config_from(cls, state_dict, keys, kind):
        """The constructor arguments in ``state_dict``, once it has ``keys`` and names ``cls``.

        ``kind`` ("optimizer", "schedule") names what ``cls`` is in the error messages.
        """
        check_mapping("state_dict", state_dict)
        if set(state_dict) != set(keys):
            raise ValueError(f"state_dict must have the keys {sorted(keys)}, "
                             f"got {sorted(state_dict)}")
        check_mapping("state_dict['config']", state_dict["config"])
        config = dict(state_dict["config"])
        name = config.pop("name", None)
        if name != cls.__name__:
            raise ValueError(f"state_dict is for {kind} {name!r}, not {cls.__name__}")
        return config


def _jsonable(value):
    """A tuple as a list (what JSON gives back); anything else as it is."""
    return list(value) if isinstance(value, tuple) else value

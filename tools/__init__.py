"""Everything around the library, one room each: ``cli`` (the command), ``demo``, ``probe``,
``bench``."""

"""The jobs behind the commands, one module each: they wire data → engine → reports and return what they wrote."""

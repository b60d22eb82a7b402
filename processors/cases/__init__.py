"""Cases: closed-loop work orders (register, dispatch, handle, verify, close), their clocks and figures."""

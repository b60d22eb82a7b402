"""Cases (工单): violations worth acting on, routed to a department and followed to verified closure;
their working-time clocks and evaluation figures."""

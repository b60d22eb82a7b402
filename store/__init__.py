"""Where readings, violations and dead letters are kept, and the queries the API answers from them."""

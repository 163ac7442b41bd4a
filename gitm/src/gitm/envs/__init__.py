"""Environment back ends other than the simulator; each is imported only when used."""

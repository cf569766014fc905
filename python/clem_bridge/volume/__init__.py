"""3-D CLEM: EM volumes registered with LM stacks (I/O, phantoms, pre-alignment, 3-D MINE)."""

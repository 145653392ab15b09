"""The Channels tutorial's chat consumers, ported by changing only their imports."""

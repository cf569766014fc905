"""The Fiji scripts (ImageJ 1 API), shipped as package data and installed by ``clem-bridge install-fiji``."""

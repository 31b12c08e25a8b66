"""Software backend: OpenSSL through the cryptography package."""

"""ML as a service on obfuscated images: a FastAPI server and the hospital's client (which keeps the key)."""

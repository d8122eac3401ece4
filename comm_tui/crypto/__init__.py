"""Identity keys, contact cards, end-to-end sealing, acknowledgements and key files."""

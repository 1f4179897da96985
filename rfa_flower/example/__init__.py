"""Example Flower app: RFA on scikit-learn digits, secure or plaintext, with corrupted clients."""

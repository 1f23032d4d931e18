"""PIX payments: the BR Code and the built-in webhook signature (pure rules)."""

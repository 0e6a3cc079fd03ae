"""Building and finding the guest image."""

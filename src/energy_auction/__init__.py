"""Energy Auction: serverless energy-market auction service."""

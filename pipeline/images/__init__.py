"""Pictures of digits: from a PNG, a JPEG or a drawing to the pixels the network reads."""

"""What every golfpack package needs and that imports nothing of ours: the error hierarchy, atomic file output,
progress on stderr, and the tool's version (recorded in every artifact)."""

__version__ = "0.1.0"

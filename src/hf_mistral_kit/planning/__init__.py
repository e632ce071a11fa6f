"""Planning a load: the hardware as plain data (`hardware`), memory from a config alone (`memory`), loading presets
resolved against the hardware (`presets`), and `plan_memory` on top of both (`plan`)."""

"""Benchmarking tfp_glow: against TFP's `tfb.Glow` and against the machine.

The library half of `tfp_glow.programs.benchmark` (which holds only its
flags and `main`), so that the measurements can be reused and tested:

  config     `Config` (architecture + batch), the presets, op/mode names;
  flops      FLOPs per operation, from `tfp_glow.architecture.plan`;
  models     one adapter per library (tfp_glow, its bfloat16 option,
             tfb.Glow) with the same three operations; op counting;
  torch_peer the PyTorch port (rosinality/glow-pytorch, optional: its
             model.py from a folder the user gives) behind the same
             adapter interface;
  timing     synchronised timing and interleaved rounds;
  roofline   the model's own convolutions as plain `tf.nn.conv2d`;
  memory     peak RSS of a training step in a fresh child process;
  suite      the comparison run that fills the results dict;
  report     the Markdown tables and the JSON/Markdown files.
"""

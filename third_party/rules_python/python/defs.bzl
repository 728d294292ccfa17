"""Offline stand-in for @rules_python//python:defs.bzl: re-exports Bazel's native Python rules."""

def py_binary(**attrs):
    """Native py_binary.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-py
    native.py_binary(**attrs)

def py_library(**attrs):
    """Native py_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-py
    native.py_library(**attrs)

def py_runtime(**attrs):
    """Native py_runtime.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-py
    native.py_runtime(**attrs)

def py_test(**attrs):
    """Native py_test.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-py
    native.py_test(**attrs)

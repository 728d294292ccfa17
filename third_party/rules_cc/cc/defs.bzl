"""Offline stand-in for @rules_cc//cc:defs.bzl: re-exports Bazel's native C++ rules."""

def cc_binary(**attrs):
    """Native cc_binary.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-binary
    native.cc_binary(**attrs)

def cc_import(**attrs):
    """Native cc_import.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-import
    native.cc_import(**attrs)

def cc_library(**attrs):
    """Native cc_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-library
    native.cc_library(**attrs)

def cc_proto_library(**attrs):
    """Native cc_proto_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-proto
    native.cc_proto_library(**attrs)

def cc_test(**attrs):
    """Native cc_test.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-test
    native.cc_test(**attrs)

def cc_toolchain(**attrs):
    """Native cc_toolchain.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-toolchain
    native.cc_toolchain(**attrs)

def cc_toolchain_suite(**attrs):
    """Native cc_toolchain_suite.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-toolchain-suite
    native.cc_toolchain_suite(**attrs)

def fdo_prefetch_hints(**attrs):
    """Native fdo_prefetch_hints.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-fdo-prefetch-hints
    native.fdo_prefetch_hints(**attrs)

def fdo_profile(**attrs):
    """Native fdo_profile.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-fdo-profile
    native.fdo_profile(**attrs)

def objc_import(**attrs):
    """Native objc_import.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-objc-import
    native.objc_import(**attrs)

def objc_library(**attrs):
    """Native objc_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-cc-objc-library
    native.objc_library(**attrs)

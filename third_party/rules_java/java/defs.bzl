"""Offline stand-in for @rules_java//java:defs.bzl: re-exports Bazel's native Java rules."""

def java_binary(**attrs):
    """Native java_binary.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-binary
    native.java_binary(**attrs)

def java_import(**attrs):
    """Native java_import.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-import
    native.java_import(**attrs)

def java_library(**attrs):
    """Native java_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-library
    native.java_library(**attrs)

def java_lite_proto_library(**attrs):
    """Native java_lite_proto_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-lite-proto
    native.java_lite_proto_library(**attrs)

def java_package_configuration(**attrs):
    """Native java_package_configuration.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-package-config
    native.java_package_configuration(**attrs)

def java_plugin(**attrs):
    """Native java_plugin.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-plugin
    native.java_plugin(**attrs)

def java_proto_library(**attrs):
    """Native java_proto_library.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-proto
    native.java_proto_library(**attrs)

def java_runtime(**attrs):
    """Native java_runtime.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-runtime
    native.java_runtime(**attrs)

def java_test(**attrs):
    """Native java_test.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-test
    native.java_test(**attrs)

def java_toolchain(**attrs):
    """Native java_toolchain.

    Args:
      **attrs: rule attributes.
    """

    # buildifier: disable=native-java-toolchain
    native.java_toolchain(**attrs)

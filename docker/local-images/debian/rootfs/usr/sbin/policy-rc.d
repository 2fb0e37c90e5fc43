#!/bin/sh
# No init system in a container: a package install never starts its service (101 = refused).
exit 101

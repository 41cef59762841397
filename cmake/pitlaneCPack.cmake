# Debian packages: `cpack -G DEB` in a build directory (configured with CMAKE_INSTALL_PREFIX=/usr)
# makes
#   pitlane        the `pitlane` command, its man pages and bash completion, the systemd unit
#                  pitlane-host@.service, the dashboard and alert rules, the Python module;
#   libpitlane-dev the static libraries, headers, CMake package and pkg-config files.
# Grouped from the install components (cmake/pitlaneComponents.cmake); a new component joins
# libpitlane-dev by being listed in PITLANE_DEV_COMPONENTS' source, the component table.
set(CPACK_PACKAGE_NAME pitlane)
set(CPACK_PACKAGE_VENDOR "pitlane")
set(CPACK_PACKAGE_CONTACT "pitlane maintainers <pitlane@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY
    "shared-memory telemetry transport for a host and its worker processes")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_STRIP_FILES ON)
# The package installs where the build was configured to (-DCMAKE_INSTALL_PREFIX=/usr for a
# Debian package). cpack installs into its staging directory with this prefix and DESTDIR, so the
# systemd unit, written at install time (packaging/CMakeLists.txt), runs <prefix>/bin/pitlane.
set(CPACK_PACKAGING_INSTALL_PREFIX ${CMAKE_INSTALL_PREFIX})
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION devel)
set(CPACK_DEBIAN_COMPRESSION_TYPE gzip)

include(CPackComponent)
get_property(pitlane_dev_components GLOBAL PROPERTY PITLANE_COMPONENTS)
set(pitlane_runtime_components cli service)
if(PITLANE_BUILD_PYTHON)
  list(APPEND pitlane_runtime_components python)
endif()
set(CPACK_COMPONENTS_ALL ${pitlane_dev_components} ${pitlane_runtime_components})
foreach(c ${pitlane_dev_components})
  cpack_add_component(${c} GROUP dev)
endforeach()
foreach(c ${pitlane_runtime_components})
  cpack_add_component(${c} GROUP runtime)
endforeach()
cpack_add_component_group(runtime)
cpack_add_component_group(dev)

set(CPACK_DEBIAN_RUNTIME_PACKAGE_NAME pitlane)
set(CPACK_DEBIAN_RUNTIME_PACKAGE_SHLIBDEPS ON)  # libgrpc++, libprotobuf, ... from the binaries
set(CPACK_DEBIAN_RUNTIME_PACKAGE_DEPENDS "python3")
set(CPACK_DEBIAN_RUNTIME_DESCRIPTION
    "pitlane host and tools, systemd unit, dashboard, alert rules, Python module")
set(CPACK_DEBIAN_DEV_PACKAGE_NAME libpitlane-dev)
set(CPACK_DEBIAN_DEV_PACKAGE_ARCHITECTURE amd64)
set(CPACK_DEBIAN_DEV_PACKAGE_DEPENDS
    "libflatbuffers-dev, libgrpc++-dev, libprotobuf-dev, libboost-dev, zlib1g-dev, libssl-dev")
set(CPACK_DEBIAN_DEV_DESCRIPTION "pitlane static libraries, headers, CMake and pkg-config files")
include(CPack)

# pitlane::admin — the host's admin gRPC service (proto/admin.proto, served on a unix socket per
# namespace or on TCP), the server side of `pitlane ctl`. Built on the public Host API only.
add_library(pitlane_admin src/admin.cc)
add_library(pitlane::admin ALIAS pitlane_admin)
target_include_directories(pitlane_admin PUBLIC
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(pitlane_admin PUBLIC pitlane_host pitlane_proto PRIVATE Threads::Threads)


# pitlane::prometheus — the /metrics endpoint (Prometheus text exposition 0.0.4) over a Host:
# transport counters, MetricSpec-declared event metrics, process_* and pitlane_build_info. HTTP via
# Boost.Beast (header-only); gzip responses via zlib.
find_package(ZLIB REQUIRED)
add_library(pitlane_prometheus src/prometheus.cc)
add_library(pitlane::prometheus ALIAS pitlane_prometheus)
target_include_directories(pitlane_prometheus PUBLIC
  $<BUILD_INTERFACE:${CMAKE_CURRENT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
target_link_libraries(pitlane_prometheus PUBLIC pitlane_host PRIVATE Boost::headers Threads::Threads
                      ZLIB::ZLIB)
target_compile_definitions(pitlane_prometheus PRIVATE PITLANE_VERSION="${PROJECT_VERSION}")
